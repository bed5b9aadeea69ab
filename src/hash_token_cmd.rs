//! `state-service hash-token`: the SHA-256 line of the tenants file for a
//! token, read from stdin so it stays out of shell history and `ps`; or, with
//! `--generate`, a new random token and its line. The token is printed only
//! when generated, never stored.

use std::{io::Read, process::ExitCode};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::{config::HashTokenArgs, tenancy::hash_token};

/// Prefix of generated tokens: lets secret scanners recognise leaked ones.
pub const TOKEN_PREFIX: &str = "sst_";

/// Shortest token `hash-token` accepts from stdin: a fast hash is only safe
/// for high-entropy tokens (see docs/security.md).
pub const MIN_TOKEN_LEN: usize = 32;

/// A new token: the prefix and 256 random bits (base64url).
pub fn generate_token() -> Result<String, String> {
    let mut bytes = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

pub fn run(args: HashTokenArgs) -> ExitCode {
    if args.generate {
        return match generate_token() {
            Ok(token) => {
                println!("# token (give it to the client; it is not stored anywhere):");
                println!("{token}");
                println!("# tenants file line:");
                println!("sha256 = \"{}\"", hash_token(&token));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read the token from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let token = input.trim_end_matches(['\r', '\n']);
    if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
        eprintln!(
            "refusing: tokens must be at least {MIN_TOKEN_LEN} characters without spaces \
             (a SHA-256 hash only protects high-entropy tokens); use --generate"
        );
        return ExitCode::from(2);
    }
    println!("sha256 = \"{}\"", hash_token(token));
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_and_distinct() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
    }
}
