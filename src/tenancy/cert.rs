//! The tenant a client certificate names (mTLS).
//!
//! The tenant is the certificate subject's Common Name, which must be a valid
//! tenant id: the same convention as Kubernetes client certificates (CN = user
//! name), and the one field every CA tool sets without extension syntax. Only
//! the leaf of a chain rustls has already verified against `--tls-client-ca`
//! reaches this module; it parses, it does not verify.

use rustls::pki_types::CertificateDer;

use super::TenantId;

/// The tenant named by the subject CN of `leaf`. Exactly one CN is accepted:
/// with several, which one "counts" would be a guess.
pub fn tenant_of(leaf: &CertificateDer<'_>) -> Result<TenantId, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| "the certificate cannot be parsed".to_string())?;
    let mut names = cert.subject().iter_common_name();
    let cn = names
        .next()
        .ok_or_else(|| "the certificate subject has no CN".to_string())?;
    if names.next().is_some() {
        return Err("the certificate subject has more than one CN".into());
    }
    let cn = cn
        .as_str()
        .map_err(|_| "the certificate CN is not a string".to_string())?;
    TenantId::parse(cn).map_err(|e| format!("the certificate CN is not a tenant id: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(tenant_of(&CertificateDer::from(vec![0x30, 0x03, 0x01])).is_err());
        assert!(tenant_of(&CertificateDer::from(Vec::new())).is_err());
    }
}
