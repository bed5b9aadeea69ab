//! The backup file format (`.ssx`, docs/design/backup-format.md): a magic
//! and version, a self-describing header, chunks of length-delimited
//! `stateservice.v1.BackupEntry` records, and a trailer with the counts.
//! Every chunk carries a SHA-256 chained over everything before it, so a
//! flipped byte, a dropped, repeated or reordered chunk and a cut-off file
//! are all detected, and a reader hands out a chunk only after checking it.
//!
//! This module only reads and writes bytes; it knows nothing of gRPC.

use std::io::{self, Read, Seek, SeekFrom, Write};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::pb::{BackupEntry, BackupHeader};

/// First bytes of every backup file. Like PNG's: the high byte catches 7-bit
/// transports, CR LF and LF catch line-ending conversion, 0x1a stops `type`
/// on Windows.
pub const MAGIC: [u8; 8] = *b"\x89SSX\r\n\x1a\n";
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// What every record holds (repeated in the header).
pub const ENTRY_TYPE: &str = "stateservice.v1.BackupEntry";

const CHUNK: u8 = b'C';
const END: u8 = b'E';
const DIGEST_LEN: usize = 32;

/// Bounds a reader enforces before allocating, so that a corrupt length
/// cannot make it allocate gigabytes.
const MAX_HEADER_BYTES: u32 = 1 << 20;
const MAX_CHUNK_BYTES: u32 = 1 << 30;
const MAX_CHUNK_ENTRIES: u32 = 1 << 24;
const MAX_TOKEN_BYTES: u32 = 1 << 20;

/// Why a file cannot be read. Every variant says where, in chunk and entry
/// numbers an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a state-service backup (wrong magic bytes)")]
    NotABackup,
    #[error(
        "backup format version {0} is not supported by this program (it reads version {VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error(
        "the file is truncated: it ends inside or after chunk {chunk} ({entries} entries \
         verified before it) without its trailer"
    )]
    Truncated { chunk: u64, entries: u64 },
    #[error(
        "the file is damaged or was altered: chunk {chunk} (after {entries} verified entries) \
         fails its checksum"
    )]
    Checksum { chunk: u64, entries: u64 },
    #[error("the file is damaged: {what} in chunk {chunk} (after {entries} verified entries)")]
    Malformed {
        what: String,
        chunk: u64,
        entries: u64,
    },
    #[error("the file's header is damaged: {0}")]
    BadHeader(String),
    #[error(
        "the trailer says {claimed} entries in {claimed_chunks} chunks, the file holds {entries} \
         in {chunks}"
    )]
    CountMismatch {
        claimed: u64,
        claimed_chunks: u64,
        entries: u64,
        chunks: u64,
    },
    #[error("the file has data after its trailer")]
    TrailingData,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One verified chunk: its entries and the export token that resumes after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub entries: Vec<BackupEntry>,
    pub resume_token: String,
}

/// Writes a backup file chunk by chunk.
pub struct Writer<W: Write> {
    w: W,
    prev: [u8; DIGEST_LEN],
    chunks: u64,
    entries: u64,
}

impl<W: Write> Writer<W> {
    /// Starts a file: magic, version and header.
    pub fn create(mut w: W, header: &BackupHeader) -> io::Result<Self> {
        let body = header.encode_to_vec();
        let mut head = Vec::with_capacity(14 + body.len());
        head.extend_from_slice(&MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(body.len() as u32).to_le_bytes());
        head.extend_from_slice(&body);
        let digest: [u8; DIGEST_LEN] = Sha256::digest(&head).into();
        w.write_all(&head)?;
        w.write_all(&digest)?;
        Ok(Self {
            w,
            prev: digest,
            chunks: 0,
            entries: 0,
        })
    }

    /// Continues a file that `recover` checked, after its last good chunk.
    pub fn resume(w: W, state: &Recovered) -> Self {
        Self {
            w,
            prev: state.digest,
            chunks: state.chunks,
            entries: state.entries,
        }
    }

    /// Appends one chunk (possibly without entries, to record a token).
    pub fn write_chunk(&mut self, entries: &[BackupEntry], resume_token: &str) -> io::Result<()> {
        let mut body = Vec::new();
        for e in entries {
            e.encode_length_delimited(&mut body)
                .map_err(io::Error::other)?;
        }
        let mut frame = Vec::with_capacity(body.len() + resume_token.len() + 13);
        frame.push(CHUNK);
        frame.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        frame.extend_from_slice(&(resume_token.len() as u32).to_le_bytes());
        frame.extend_from_slice(resume_token.as_bytes());
        let digest = chain(&self.prev, &frame);
        self.w.write_all(&frame)?;
        self.w.write_all(&digest)?;
        self.prev = digest;
        self.chunks += 1;
        self.entries += entries.len() as u64;
        Ok(())
    }

    /// Entries written so far (including those of a resumed file).
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the trailer and flushes; the file is complete.
    pub fn finish(mut self) -> io::Result<W> {
        let mut frame = Vec::with_capacity(17);
        frame.push(END);
        frame.extend_from_slice(&self.entries.to_le_bytes());
        frame.extend_from_slice(&self.chunks.to_le_bytes());
        let digest = chain(&self.prev, &frame);
        self.w.write_all(&frame)?;
        self.w.write_all(&digest)?;
        self.w.flush()?;
        Ok(self.w)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn chain(prev: &[u8; DIGEST_LEN], frame: &[u8]) -> [u8; DIGEST_LEN] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(frame);
    h.finalize().into()
}

/// Reads and checks a backup file chunk by chunk.
pub struct Reader<R: Read> {
    r: R,
    header: BackupHeader,
    prev: [u8; DIGEST_LEN],
    chunks: u64,
    entries: u64,
    /// Bytes consumed so far (the end of the last verified frame).
    offset: u64,
    finished: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the magic, version and header.
    pub fn open(mut r: R) -> Result<Self, FormatError> {
        let mut magic = [0u8; 8];
        read_exact_or(&mut r, &mut magic, || FormatError::NotABackup)?;
        if magic != MAGIC {
            return Err(FormatError::NotABackup);
        }
        let mut fixed = [0u8; 6];
        read_exact_or(&mut r, &mut fixed, || {
            FormatError::BadHeader("cut short".into())
        })?;
        let version = u16::from_le_bytes([fixed[0], fixed[1]]);
        if version != VERSION {
            return Err(FormatError::UnsupportedVersion(version));
        }
        let len = u32::from_le_bytes([fixed[2], fixed[3], fixed[4], fixed[5]]);
        if len > MAX_HEADER_BYTES {
            return Err(FormatError::BadHeader(format!("{len} bytes long")));
        }
        let mut body = vec![0u8; len as usize];
        read_exact_or(&mut r, &mut body, || {
            FormatError::BadHeader("cut short".into())
        })?;
        let mut digest = [0u8; DIGEST_LEN];
        read_exact_or(&mut r, &mut digest, || {
            FormatError::BadHeader("cut short".into())
        })?;
        let mut h = Sha256::new();
        h.update(magic);
        h.update(fixed);
        h.update(&body);
        let want: [u8; DIGEST_LEN] = h.finalize().into();
        if want != digest {
            return Err(FormatError::BadHeader("checksum mismatch".into()));
        }
        let header = BackupHeader::decode(body.as_slice())
            .map_err(|e| FormatError::BadHeader(e.to_string()))?;
        if header.entry_type != ENTRY_TYPE {
            return Err(FormatError::BadHeader(format!(
                "records of type {:?}, expected {ENTRY_TYPE}",
                header.entry_type
            )));
        }
        Ok(Self {
            r,
            header,
            prev: digest,
            chunks: 0,
            entries: 0,
            offset: 14 + u64::from(len) + DIGEST_LEN as u64,
            finished: false,
        })
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Verified entries read so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The next chunk, checked; `None` after a valid trailer that ends the
    /// file. An error leaves everything from the bad chunk on unread.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>, FormatError> {
        if self.finished {
            return Ok(None);
        }
        let truncated = |s: &Self| FormatError::Truncated {
            chunk: s.chunks + 1,
            entries: s.entries,
        };
        let mut kind = [0u8; 1];
        if self.r.read(&mut kind)? == 0 {
            return Err(truncated(self));
        }
        match kind[0] {
            CHUNK => self.read_chunk().map(Some),
            END => {
                let mut rest = [0u8; 16 + DIGEST_LEN];
                let cut = truncated(self);
                read_exact_or(&mut self.r, &mut rest, || cut)?;
                let mut frame = vec![END];
                frame.extend_from_slice(&rest[..16]);
                if chain(&self.prev, &frame) != rest[16..] {
                    return Err(FormatError::Checksum {
                        chunk: self.chunks + 1,
                        entries: self.entries,
                    });
                }
                let claimed = u64::from_le_bytes(rest[..8].try_into().unwrap_or_default());
                let claimed_chunks = u64::from_le_bytes(rest[8..16].try_into().unwrap_or_default());
                if claimed != self.entries || claimed_chunks != self.chunks {
                    return Err(FormatError::CountMismatch {
                        claimed,
                        claimed_chunks,
                        entries: self.entries,
                        chunks: self.chunks,
                    });
                }
                let mut extra = [0u8; 1];
                if self.r.read(&mut extra)? != 0 {
                    return Err(FormatError::TrailingData);
                }
                self.finished = true;
                Ok(None)
            }
            other => Err(FormatError::Malformed {
                what: format!("unknown frame type 0x{other:02x}"),
                chunk: self.chunks + 1,
                entries: self.entries,
            }),
        }
    }

    fn read_chunk(&mut self) -> Result<Chunk, FormatError> {
        let chunk = self.chunks + 1;
        let entries_before = self.entries;
        let truncated = || FormatError::Truncated {
            chunk,
            entries: entries_before,
        };
        let malformed = |what: String| FormatError::Malformed {
            what,
            chunk,
            entries: entries_before,
        };
        let mut fixed = [0u8; 8];
        read_exact_or(&mut self.r, &mut fixed, truncated)?;
        let count = u32::from_le_bytes([fixed[0], fixed[1], fixed[2], fixed[3]]);
        let body_len = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        if count > MAX_CHUNK_ENTRIES || body_len > MAX_CHUNK_BYTES {
            return Err(malformed(format!(
                "a chunk claims {count} entries in {body_len} bytes"
            )));
        }
        let mut frame = Vec::with_capacity(body_len as usize + 13);
        frame.push(CHUNK);
        frame.extend_from_slice(&fixed);
        let start = frame.len();
        frame.resize(start + body_len as usize, 0);
        read_exact_or(&mut self.r, &mut frame[start..], truncated)?;
        let mut token_len = [0u8; 4];
        read_exact_or(&mut self.r, &mut token_len, truncated)?;
        frame.extend_from_slice(&token_len);
        let token_len = u32::from_le_bytes(token_len);
        if token_len > MAX_TOKEN_BYTES {
            return Err(malformed(format!("a resume token of {token_len} bytes")));
        }
        let token_start = frame.len();
        frame.resize(token_start + token_len as usize, 0);
        read_exact_or(&mut self.r, &mut frame[token_start..], truncated)?;
        let mut digest = [0u8; DIGEST_LEN];
        read_exact_or(&mut self.r, &mut digest, truncated)?;
        let want = chain(&self.prev, &frame);
        if want != digest {
            return Err(FormatError::Checksum {
                chunk,
                entries: entries_before,
            });
        }
        // Checked: now decode. A record that does not decode in a chunk
        // whose checksum holds was written so by the exporter; the chunk is
        // refused all the same.
        let mut body = &frame[start..start + body_len as usize];
        let mut entries = Vec::with_capacity(count as usize);
        while !body.is_empty() {
            let e = BackupEntry::decode_length_delimited(&mut body)
                .map_err(|e| malformed(format!("record {} does not decode: {e}", entries.len())))?;
            entries.push(e);
        }
        if entries.len() != count as usize {
            return Err(malformed(format!(
                "{} records where the chunk header says {count}",
                entries.len()
            )));
        }
        let resume_token = String::from_utf8(frame[token_start..].to_vec())
            .map_err(|_| malformed("a resume token that is not UTF-8".into()))?;
        self.prev = digest;
        self.chunks = chunk;
        self.entries += entries.len() as u64;
        self.offset += frame.len() as u64 + DIGEST_LEN as u64;
        Ok(Chunk {
            entries,
            resume_token,
        })
    }
}

fn read_exact_or<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    on_eof: impl FnOnce() -> FormatError,
) -> Result<(), FormatError> {
    match r.read_exact(buf) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(on_eof()),
        Err(e) => Err(e.into()),
    }
}

/// What `recover` found in a partly written file.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub header: BackupHeader,
    /// Byte length of the verified part (header and whole chunks).
    pub valid_len: u64,
    /// The resume token of the last verified chunk (empty: none yet).
    pub resume_token: String,
    pub chunks: u64,
    pub entries: u64,
    /// Whether the file already ends with a valid trailer.
    pub complete: bool,
    digest: [u8; DIGEST_LEN],
}

/// Reads a file an interrupted export left behind and finds where it can
/// continue: after the last chunk whose checksum holds. A file whose header
/// is bad cannot be resumed.
pub fn recover<F: Read + Seek>(mut f: F) -> Result<Recovered, FormatError> {
    f.seek(SeekFrom::Start(0))?;
    let mut reader = Reader::open(io::BufReader::new(&mut f))?;
    let mut resume_token = String::new();
    let mut valid_len = reader.offset;
    let mut digest = reader.prev;
    let mut complete = false;
    loop {
        match reader.next_chunk() {
            Ok(Some(chunk)) => {
                resume_token = chunk.resume_token;
                valid_len = reader.offset;
                digest = reader.prev;
            }
            Ok(None) => {
                complete = true;
                break;
            }
            Err(FormatError::Io(e)) => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(Recovered {
        header: reader.header.clone(),
        valid_len,
        resume_token,
        chunks: reader.chunks,
        entries: reader.entries,
        complete,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::{Value, value::Kind};

    fn entry(i: u64) -> BackupEntry {
        BackupEntry {
            key: format!("k{i}"),
            value: Some(Value {
                kind: Some(Kind::IntValue(i as i64)),
            }),
            version: 1_000 + i,
            ttl: None,
        }
    }

    fn file(chunks: u64) -> Vec<u8> {
        let header = BackupHeader {
            entry_type: ENTRY_TYPE.into(),
            tenant: "a".into(),
            ..Default::default()
        };
        let mut w = Writer::create(Vec::new(), &header).unwrap();
        for c in 0..chunks {
            let entries: Vec<_> = (c * 10..c * 10 + 10).map(entry).collect();
            w.write_chunk(&entries, &format!("t{c}")).unwrap();
        }
        w.finish().unwrap()
    }

    fn read_all(bytes: &[u8]) -> Result<Vec<BackupEntry>, FormatError> {
        let mut r = Reader::open(bytes)?;
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk()? {
            out.extend(c.entries);
        }
        Ok(out)
    }

    #[test]
    fn files_round_trip() {
        let all = read_all(&file(3)).unwrap();
        assert_eq!(all, (0..30).map(entry).collect::<Vec<_>>());
    }

    #[test]
    fn every_truncation_is_detected() {
        let f = file(2);
        for cut in 0..f.len() {
            assert!(read_all(&f[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let f = file(2);
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            assert!(read_all(&g).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn a_bad_chunk_yields_nothing_from_it_on() {
        let f = file(3);
        let mut g = f.clone();
        let last_chunk_byte = f.len() - 60;
        g[last_chunk_byte] ^= 1;
        let mut r = Reader::open(g.as_slice()).unwrap();
        assert_eq!(r.next_chunk().unwrap().unwrap().entries.len(), 10);
        assert_eq!(r.next_chunk().unwrap().unwrap().entries.len(), 10);
        assert!(matches!(
            r.next_chunk(),
            Err(FormatError::Checksum {
                chunk: 3,
                entries: 20
            })
        ));
    }

    #[test]
    fn recovery_finds_the_last_whole_chunk() {
        let f = file(3);
        let whole = recover(io::Cursor::new(&f)).unwrap();
        assert!(whole.complete);
        assert_eq!(whole.entries, 30);
        let cut = recover(io::Cursor::new(&f[..f.len() - 70])).unwrap();
        assert!(!cut.complete);
        assert_eq!((cut.chunks, cut.entries), (2, 20));
        assert_eq!(cut.resume_token, "t1");
        // Appending after the verified part gives a valid file.
        let mut g = f[..cut.valid_len as usize].to_vec();
        let mut w = Writer::resume(&mut g, &cut);
        w.write_chunk(&(20..30).map(entry).collect::<Vec<_>>(), "")
            .unwrap();
        w.finish().unwrap();
        assert_eq!(read_all(&g).unwrap().len(), 30);
    }
}
