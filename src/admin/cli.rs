//! The admin subcommands: argument definitions and their runs. Each command
//! connects like `health` (plaintext, or TLS with `--ca-file`, optionally a
//! client certificate), authenticates with `--token` / `STATE_TOKEN`, shows
//! a progress bar on a terminal (keys, keys/s, elapsed; nothing when stderr
//! is not a TTY) and ends with one summary line on stderr. Backups go to
//! stdout or `--file`, so stdout carries data only.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufReader, BufWriter, IsTerminal, Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use super::format::{self, FormatError, Reader, Writer};
use crate::{config::Secret, pb};

/// Largest message the CLI accepts from the server (an Export page is at
/// most the server's --max-response-bytes plus framing).
const MAX_RESPONSE_MESSAGE: usize = 256 * 1024 * 1024;

/// Bytes of entries per Import message (the server's --max-request-bytes
/// defaults to 4 MiB; one entry may be up to --max-value-bytes on its own).
const IMPORT_MESSAGE_BYTES: usize = 1024 * 1024;

/// How to reach the server: shared by every admin subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// Address of the server (host:port, or an http:// / https:// URL).
    #[arg(long, env = "STATE_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Bearer token with the admin scope (or set STATE_TOKEN, which keeps it
    /// out of `ps` and shell history). Absent: no authorization header
    /// (servers without credentials configured).
    #[arg(long, env = "STATE_TOKEN", hide_env_values = true)]
    pub token: Option<Secret>,
    /// Connect with TLS, trusting the CA certificates in this PEM file.
    /// Absent: plaintext.
    #[arg(long, env = "STATE_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Name to verify the server certificate against when it differs from
    /// the host in --addr.
    #[arg(long, env = "STATE_TLS_DOMAIN")]
    pub tls_domain: Option<String>,
    /// Client certificate (PEM) for mTLS; requires --key and --ca-file.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// How long to wait for the connection.
    #[arg(long, default_value = "10s", value_parser = crate::duration::parse)]
    pub connect_timeout: Duration,
    /// The tenant to act on (empty: the token's own). Another tenant than
    /// the token's needs an operator grant (docs/security.md).
    #[arg(long, env = "STATE_TENANT", default_value = "")]
    pub tenant: String,
}

/// `state-service export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Write the backup here instead of stdout.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Continue an interrupted export into --file: keep every chunk whose
    /// checksum holds and resume the export after the last one.
    #[arg(long, requires = "file")]
    pub resume: bool,
    /// Entries per page (and per chunk of the file); 0: the server's default.
    #[arg(long, default_value_t = 1000)]
    pub page_size: u32,
}

/// Conflict policy of `state-service import`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Policy {
    /// Write every entry, replacing what the key holds.
    Overwrite,
    /// Leave existing keys alone.
    SkipExisting,
    /// Write an entry only if its version is above the existing key's.
    Newer,
}

/// `state-service import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// What to do with keys that already exist.
    #[arg(long, value_enum, default_value_t = Policy::Overwrite)]
    pub policy: Policy,
    /// Read the backup from here instead of stdin. A file is verified whole
    /// before anything is applied; stdin is verified chunk by chunk, each
    /// before it is applied.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Only verify the backup (checksums, counts, records) and print what
    /// it holds; apply nothing and contact no server.
    #[arg(long)]
    pub check: bool,
    /// Entries per Import message (at most the server's --max-batch-items).
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

/// `state-service purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Required with an empty --prefix: purge the whole tenant.
    #[arg(long)]
    pub all_keys: bool,
}

/// `state-service stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Only keys starting with this.
    #[arg(long, default_value = "")]
    pub prefix: String,
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

pub type AdminClient =
    pb::admin_service_client::AdminServiceClient<InterceptedService<Channel, Auth>>;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Connects to the server the arguments name.
pub async fn connect(c: &ConnArgs) -> Result<AdminClient, Failure> {
    crate::tls::install_crypto_provider();
    let scheme = if c.ca_file.is_some() { "https" } else { "http" };
    let target = if c.addr.contains("://") {
        c.addr.clone()
    } else {
        format!("{scheme}://{}", c.addr)
    };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(target.clone())?.connect_timeout(c.connect_timeout);
    if let Some(ca) = &c.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read --ca-file {}: {e}", ca.display()))?;
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(pem));
        if let Some(domain) = &c.tls_domain {
            tls = tls.domain_name(domain.clone());
        }
        if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
            let cert = std::fs::read(cert)
                .map_err(|e| format!("cannot read --cert {}: {e}", cert.display()))?;
            let key = std::fs::read(key)
                .map_err(|e| format!("cannot read --key {}: {e}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let auth = match &c.token {
        None => None,
        Some(t) => Some(
            format!("Bearer {}", t.expose())
                .parse()
                .map_err(|_| "the token must be visible ASCII")?,
        ),
    };
    Ok(
        pb::admin_service_client::AdminServiceClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_RESPONSE_MESSAGE)
            .max_encoding_message_size(MAX_RESPONSE_MESSAGE),
    )
}

/// A progress display on stderr when it is a terminal; hidden otherwise.
fn progress(what: &str, total: Option<u64>) -> ProgressBar {
    if !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = match total {
        Some(_) => format!(
            "{what} {{bar:30}} {{human_pos}}/{{human_len}} keys  {{per_sec}}  {{elapsed_precise}}"
        ),
        None => format!("{what} {{spinner}} {{human_pos}} keys  {{per_sec}}  {{elapsed_precise}}"),
    };
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn rate(n: u64, d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.0}", n as f64 / secs)
}

/// An error line on stderr, status messages shown as the server wrote them.
fn fail(what: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("state-service {what}: {e}");
    ExitCode::FAILURE
}

fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

pub async fn export(args: ExportArgs) -> ExitCode {
    match run_export(&args).await {
        Ok(code) => code,
        Err(e) => fail("export", e),
    }
}

async fn run_export(args: &ExportArgs) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    // The file to write, and where the export continues.
    let (mut writer, mut token, resumed_from): (Writer<Box<dyn Write + Send>>, String, u64) =
        match (&args.file, args.resume) {
            (Some(path), true) => match open_for_resume(path, args)? {
                Resume::Complete(n) => {
                    eprintln!(
                        "export: {} is already complete ({n} entries); nothing to do",
                        path.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Resume::Continue(w, token, n) => (w, token, n),
            },
            (file, _) => {
                if file.is_none() && io::stdout().is_terminal() {
                    return Err("refusing to write a binary backup to a terminal: redirect \
                                stdout (> backup.ssx) or pass --file"
                        .into());
                }
                let out: Box<dyn Write + Send> = match file {
                    Some(path) => Box::new(BufWriter::with_capacity(
                        1 << 20,
                        File::create(path)
                            .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
                    )),
                    None => Box::new(BufWriter::with_capacity(1 << 20, io::stdout())),
                };
                let header = pb::BackupHeader {
                    entry_type: format::ENTRY_TYPE.into(),
                    tenant: args.conn.tenant.clone(),
                    prefix: args.prefix.clone(),
                    created_at_ms: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64),
                    writer: concat!("state-service ", env!("CARGO_PKG_VERSION")).into(),
                };
                (Writer::create(out, &header)?, String::new(), 0)
            }
        };
    let done_already = resumed_from > 0 && token.is_empty();
    let bar = progress("export", None);
    bar.set_position(resumed_from);
    let mut skipped = 0u64;
    if !done_already {
        let mut client = connect(&args.conn).await?;
        let mut stream = client
            .export(pb::ExportRequest {
                tenant: args.conn.tenant.clone(),
                prefix: args.prefix.clone(),
                page_token: token.clone(),
                page_size: args.page_size,
            })
            .await
            .map_err(|s| status_text(&s))?
            .into_inner();
        while let Some(page) = stream.message().await.map_err(|s| {
            format!(
                "{}; the file keeps every page received so far: rerun with --resume --file to \
                 continue",
                status_text(&s)
            )
        })? {
            // One chunk per page, flushed, so an interruption loses at
            // most the page in flight.
            writer.write_chunk(&page.entries, &page.next_page_token)?;
            writer.flush()?;
            bar.inc(page.entries.len() as u64);
            skipped += page.skipped;
            token = page.next_page_token;
        }
        if !token.is_empty() {
            return Err(
                "the server ended the export early; rerun with --resume --file to continue".into(),
            );
        }
    }
    let total = writer.entries();
    writer.finish()?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    eprintln!(
        "exported {} keys ({} this run, {skipped} skipped) in {:.1}s ({} keys/s){}",
        total,
        total - resumed_from,
        elapsed.as_secs_f64(),
        rate(total - resumed_from, elapsed),
        args.file
            .as_ref()
            .map(|p| format!(" to {}", p.display()))
            .unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}

enum Resume {
    Complete(u64),
    Continue(Writer<Box<dyn Write + Send>>, String, u64),
}

/// Opens an interrupted export's file: cuts it after the last chunk whose
/// checksum holds and positions a writer there.
fn open_for_resume(path: &Path, args: &ExportArgs) -> Result<Resume, Failure> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {} to resume: {e}", path.display()))?;
    let rec =
        format::recover(&mut f).map_err(|e| format!("cannot resume {}: {e}", path.display()))?;
    if rec.complete {
        return Ok(Resume::Complete(rec.entries));
    }
    // The file's tokens (and entries) belong to one tenant and prefix.
    if rec.header.tenant != args.conn.tenant || rec.header.prefix != args.prefix {
        return Err(format!(
            "{} is an export of tenant {:?} prefix {:?}; resume it with the same --tenant and \
             --prefix",
            path.display(),
            rec.header.tenant,
            rec.header.prefix
        )
        .into());
    }
    f.set_len(rec.valid_len)?;
    use std::io::Seek;
    f.seek(io::SeekFrom::End(0))?;
    let out: Box<dyn Write + Send> = Box::new(BufWriter::with_capacity(1 << 20, f));
    eprintln!(
        "export: resuming {} after {} entries in {} chunks",
        path.display(),
        rec.entries,
        rec.chunks
    );
    Ok(Resume::Continue(
        Writer::resume(out, &rec),
        rec.resume_token.clone(),
        rec.entries,
    ))
}

pub async fn import(args: ImportArgs) -> ExitCode {
    match run_import(&args).await {
        Ok(code) => code,
        Err(e) => fail("import", e),
    }
}

fn open_source(file: &Option<PathBuf>) -> Result<Box<dyn Read + Send>, Failure> {
    Ok(match file {
        Some(path) => Box::new(BufReader::with_capacity(
            1 << 20,
            File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        )),
        None if io::stdin().is_terminal() => {
            return Err("no backup on stdin: redirect a file (< backup.ssx) or pass --file".into());
        }
        None => Box::new(BufReader::with_capacity(1 << 20, io::stdin())),
    })
}

/// Reads a whole backup, checking it; the number of entries.
fn verify(src: Box<dyn Read + Send>) -> Result<(pb::BackupHeader, u64), FormatError> {
    let mut r = Reader::open(src)?;
    while r.next_chunk()?.is_some() {}
    Ok((r.header().clone(), r.entries()))
}

async fn run_import(args: &ImportArgs) -> Result<ExitCode, Failure> {
    let started = Instant::now();
    if args.check {
        return Ok(match verify(open_source(&args.file)?) {
            Ok((h, n)) => {
                println!(
                    "ok: {n} entries exported from tenant {:?} prefix {:?} by {}",
                    h.tenant, h.prefix, h.writer
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail("import --check", format!("refused: {e}")),
        });
    }
    // A file is checked whole first, so a damaged one applies nothing.
    let total = match &args.file {
        Some(_) => match verify(open_source(&args.file)?) {
            Ok((_, n)) => Some(n),
            Err(e) => {
                return Ok(fail(
                    "import",
                    format!("refused: {e}; nothing was imported"),
                ));
            }
        },
        None => None,
    };
    let mut client = connect(&args.conn).await?;
    let bar = progress("import", total);
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportRequest>(4);
    let src = open_source(&args.file)?;
    let tenant = args.conn.tenant.clone();
    let policy = match args.policy {
        Policy::Overwrite => pb::ImportPolicy::Overwrite,
        Policy::SkipExisting => pb::ImportPolicy::SkipExisting,
        Policy::Newer => pb::ImportPolicy::NewerVersion,
    } as i32;
    let batch = args.batch.max(1);
    let sent_bar = bar.clone();
    // The file is read on a blocking thread; a chunk is sent only after its
    // checksum holds, and a bad chunk ends the stream (what came before is
    // applied, nothing from the bad chunk on).
    let reader = tokio::task::spawn_blocking(move || -> Result<u64, FormatError> {
        let mut r = Reader::open(src)?;
        let mut first = true;
        let mut send = |entries: Vec<pb::BackupEntry>| -> bool {
            let n = entries.len() as u64;
            let msg = pb::ImportRequest {
                tenant: if first { tenant.clone() } else { String::new() },
                policy,
                entries,
            };
            first = false;
            let ok = tx.blocking_send(msg).is_ok();
            sent_bar.inc(n);
            ok
        };
        // The first message names tenant and policy even for an empty file.
        let mut pending: Vec<pb::BackupEntry> = Vec::new();
        let mut bytes = 0;
        let mut opened = false;
        loop {
            let chunk = match r.next_chunk() {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    // Entries of the chunks before the bad one were checked:
                    // they go; nothing of the bad chunk does.
                    if !pending.is_empty() {
                        send(pending);
                    }
                    return Err(e);
                }
            };
            for e in chunk.entries {
                let size = e.encoded_len();
                if !pending.is_empty()
                    && (pending.len() >= batch || bytes + size > IMPORT_MESSAGE_BYTES)
                {
                    if !send(std::mem::take(&mut pending)) {
                        return Ok(r.entries());
                    }
                    opened = true;
                    bytes = 0;
                }
                bytes += size;
                pending.push(e);
            }
        }
        if !pending.is_empty() || !opened {
            send(pending);
        }
        Ok(r.entries())
    });
    let response = client
        .import(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    let read = reader
        .await
        .map_err(|e| format!("the file reader failed: {e}"))?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let resp = match response {
        Ok(r) => r.into_inner(),
        Err(s) => {
            return Err(format!(
                "{}; entries sent before the error may have been applied (re-run with \
                 --policy newer to finish without rewriting them)",
                status_text(&s)
            )
            .into());
        }
    };
    for f in &resp.failures {
        eprintln!(
            "import: entry {} ({:?}) failed: {}: {}",
            f.index, f.key, f.reason, f.message
        );
    }
    let done = resp.written + resp.skipped + resp.failed;
    eprintln!(
        "imported {} keys: {} written, {} skipped, {} failed in {:.1}s ({} keys/s)",
        done,
        resp.written,
        resp.skipped,
        resp.failed,
        elapsed.as_secs_f64(),
        rate(done, elapsed)
    );
    match read {
        Ok(_) if resp.failed == 0 => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::from(3)),
        Err(e) => Ok(fail(
            "import",
            format!(
                "refused the rest of the input: {e}; the {done} entries before the bad chunk \
                 were applied, nothing from it on"
            ),
        )),
    }
}

pub async fn purge(args: PurgeArgs) -> ExitCode {
    let started = Instant::now();
    let run = async {
        let mut client = connect(&args.conn).await?;
        let mut stream = client
            .purge(pb::PurgeRequest {
                tenant: args.conn.tenant.clone(),
                prefix: args.prefix.clone(),
                all_keys: args.all_keys,
            })
            .await
            .map_err(|s| status_text(&s))?
            .into_inner();
        let bar = progress("purge", None);
        let mut last = pb::PurgeProgress::default();
        while let Some(p) = stream.message().await.map_err(|s| {
            format!(
                "{}; {} keys were deleted; purge is safe to re-run",
                status_text(&s),
                last.deleted
            )
        })? {
            bar.set_position(p.deleted);
            last = p;
        }
        bar.finish_and_clear();
        Ok::<_, Failure>(last)
    };
    match run.await {
        Ok(p) if p.done => {
            let elapsed = started.elapsed();
            eprintln!(
                "purged {} keys in {:.1}s ({} keys/s)",
                p.deleted,
                elapsed.as_secs_f64(),
                rate(p.deleted, elapsed)
            );
            ExitCode::SUCCESS
        }
        Ok(p) => fail(
            "purge",
            format!("the stream ended early after {} keys; re-run", p.deleted),
        ),
        Err(e) => fail("purge", e),
    }
}

pub async fn stats(args: StatsArgs) -> ExitCode {
    let run = async {
        let mut client = connect(&args.conn).await?;
        let mut stream = client
            .stats(pb::StatsRequest {
                tenant: args.conn.tenant.clone(),
                prefix: args.prefix.clone(),
            })
            .await
            .map_err(|s| status_text(&s))?
            .into_inner();
        let bar = progress("stats", None);
        let mut last = pb::StatsProgress::default();
        while let Some(p) = stream.message().await.map_err(|s| status_text(&s))? {
            bar.set_position(p.keys);
            last = p;
        }
        bar.finish_and_clear();
        Ok::<_, Failure>(last)
    };
    match run.await {
        Ok(p) if p.done => {
            println!("keys {} bytes {}", p.keys, p.bytes);
            ExitCode::SUCCESS
        }
        Ok(_) => fail("stats", "the stream ended before the totals"),
        Err(e) => fail("stats", e),
    }
}
