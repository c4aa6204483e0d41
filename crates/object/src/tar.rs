//! A streaming reader of tar archives (plain, gzip or bzip2), for archive extraction: entries come one at a time as
//! the upload streams, each file's data read straight through into the store.
//!
//! It understands ustar headers (with the `prefix` field), GNU long names (`L`), base-256 sizes and POSIX pax
//! extended headers (`path`, `size`, and `SCHILY.xattr.user.*` attributes, which extraction turns into a content
//! type and metadata). Only regular files are returned as files; directories and links are listed but carry no data.

use std::io::Write as _;

use bytes::{Buf as _, Bytes, BytesMut};
use futures::StreamExt as _;

use crate::{error::Error, server::ByteStream};

/// How the archive is compressed (`?extract-archive=tar|tar.gz|tar.bz2`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
}

impl Compression {
    /// The `extract-archive` value: `tar`, `tar.gz`/`tgz`, `tar.bz2`/`tbz`; `None` for anything else.
    pub fn from_param(p: &str) -> Option<Compression> {
        match p {
            "tar" => Some(Compression::None),
            "tar.gz" | "tgz" => Some(Compression::Gzip),
            "tar.bz2" | "tbz" => Some(Compression::Bzip2),
            _ => None,
        }
    }
}

enum Decoder {
    None,
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Bzip2(bzip2::write::BzDecoder<Vec<u8>>),
}

fn invalid(what: &str) -> Error {
    Error::BadRequest(format!("Invalid Tar File: {what}"))
}

/// One entry of the archive.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub path: String,
    pub size: u64,
    /// A regular file (the only kind extracted).
    pub file: bool,
    /// `user.*` extended attributes from pax headers, without the `user.` prefix (`mime_type`, `meta.<name>`).
    pub xattrs: Vec<(String, String)>,
}

/// The reader: [`TarReader::next_entry`], then [`TarReader::read`] until it gives `None`.
pub struct TarReader {
    input: ByteStream,
    input_done: bool,
    decoder: Decoder,
    buf: BytesMut,
    /// Data bytes of the current entry not yet read, and the padding after them.
    remaining: u64,
    padding: u64,
    finished: bool,
}

impl TarReader {
    pub fn new(input: ByteStream, compression: Compression) -> TarReader {
        let decoder = match compression {
            Compression::None => Decoder::None,
            Compression::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            Compression::Bzip2 => Decoder::Bzip2(bzip2::write::BzDecoder::new(Vec::new())),
        };
        TarReader { input, input_done: false, decoder, buf: BytesMut::new(), remaining: 0, padding: 0, finished: false }
    }

    /// Pulls more input through the decoder; `false` at the end of the input.
    async fn fill(&mut self) -> Result<bool, Error> {
        if self.input_done {
            return Ok(false);
        }
        loop {
            match self.input.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(|e| Error::UploadInterrupted(e.to_string()))?;
                    let out = match &mut self.decoder {
                        Decoder::None => {
                            self.buf.extend_from_slice(&chunk);
                            return Ok(true);
                        }
                        Decoder::Gzip(d) => {
                            d.write_all(&chunk).map_err(|_| invalid("cannot decompress gzip data"))?;
                            std::mem::take(d.get_mut())
                        }
                        Decoder::Bzip2(d) => {
                            d.write_all(&chunk).map_err(|_| invalid("cannot decompress bzip2 data"))?;
                            std::mem::take(d.get_mut())
                        }
                    };
                    if !out.is_empty() {
                        self.buf.extend_from_slice(&out);
                        return Ok(true);
                    }
                }
                None => {
                    self.input_done = true;
                    let out = match &mut self.decoder {
                        Decoder::None => Vec::new(),
                        Decoder::Gzip(d) => {
                            d.try_finish().map_err(|_| invalid("truncated gzip data"))?;
                            std::mem::take(d.get_mut())
                        }
                        Decoder::Bzip2(d) => {
                            d.try_finish().map_err(|_| invalid("truncated bzip2 data"))?;
                            std::mem::take(d.get_mut())
                        }
                    };
                    self.buf.extend_from_slice(&out);
                    return Ok(!out.is_empty());
                }
            }
        }
    }

    /// Exactly `n` bytes (`n` small: a header), or `None` at a clean end of input.
    async fn take(&mut self, n: usize) -> Result<Option<Bytes>, Error> {
        while self.buf.len() < n {
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(invalid("unexpected end of data"));
            }
        }
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    /// Drops `n` bytes of the stream.
    async fn skip(&mut self, mut n: u64) -> Result<(), Error> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(invalid("unexpected end of data"));
            }
            let k = (self.buf.len() as u64).min(n) as usize;
            self.buf.advance(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// The next chunk of the current entry's data, `None` when it is all read.
    pub async fn read(&mut self) -> Result<Option<Bytes>, Error> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if self.buf.is_empty() && !self.fill().await? {
            return Err(invalid("unexpected end of data"));
        }
        let k = (self.buf.len() as u64).min(self.remaining).min(1 << 20) as usize;
        self.remaining -= k as u64;
        Ok(Some(self.buf.split_to(k).freeze()))
    }

    /// The whole (small) data of the current entry.
    async fn read_small(&mut self, limit: u64) -> Result<Vec<u8>, Error> {
        if self.remaining > limit {
            return Err(invalid("extended header too large"));
        }
        let mut out = Vec::with_capacity(self.remaining as usize);
        while let Some(chunk) = self.read().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Skips what is left of the current entry and reads the next header; `None` at the end of the archive.
    pub async fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        let mut long_name: Option<String> = None;
        let mut pax: Vec<(String, String)> = Vec::new();
        loop {
            if self.finished {
                return Ok(None);
            }
            let (rest, pad) = (self.remaining, self.padding);
            self.remaining = 0;
            self.padding = 0;
            self.skip(rest + pad).await?;
            let Some(header) = self.take(512).await? else {
                self.finished = true;
                return Ok(None);
            };
            if header.iter().all(|b| *b == 0) {
                // The end-of-archive marker (two zero blocks; the second, and anything after, is not needed).
                self.finished = true;
                return Ok(None);
            }
            check_checksum(&header)?;
            let size = parse_size(&header[124..136])?;
            let kind = header[156];
            self.remaining = size;
            self.padding = (512 - size % 512) % 512;
            match kind {
                b'x' => {
                    let data = self.read_small(1 << 20).await?;
                    pax = parse_pax(&data)?;
                    continue;
                }
                b'g' => continue,
                b'L' => {
                    let data = self.read_small(1 << 16).await?;
                    long_name = Some(cstr(&data));
                    continue;
                }
                b'K' => continue,
                _ => {}
            }
            let mut path = long_name.take().unwrap_or_else(|| {
                let name = cstr(&header[0..100]);
                let ustar = &header[257..262] == b"ustar";
                let prefix = if ustar { cstr(&header[345..500]) } else { String::new() };
                if prefix.is_empty() { name } else { format!("{prefix}/{name}") }
            });
            let mut xattrs = Vec::new();
            for (k, v) in pax.drain(..) {
                match k.as_str() {
                    "path" => path = v,
                    "size" => {
                        let s: u64 = v.parse().map_err(|_| invalid("bad pax size"))?;
                        self.remaining = s;
                        self.padding = (512 - s % 512) % 512;
                    }
                    _ => {
                        if let Some(attr) = k.strip_prefix("SCHILY.xattr.user.") {
                            xattrs.push((attr.to_string(), v));
                        }
                    }
                }
            }
            let file = matches!(kind, b'0' | 0 | b'7');
            let size = self.remaining;
            if !file {
                // Directories and links have no data worth keeping; whatever size they claim is skipped.
                return Ok(Some(Entry { path, size: 0, file, xattrs }));
            }
            return Ok(Some(Entry { path, size, file, xattrs }));
        }
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn check_checksum(h: &[u8]) -> Result<(), Error> {
    let stored = parse_octal(&h[148..156]).ok_or_else(|| invalid("bad header checksum"))?;
    let sum: u64 = h.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u64::from(*b) }).sum();
    if sum != stored {
        return Err(invalid("bad header checksum"));
    }
    Ok(())
}

fn parse_octal(b: &[u8]) -> Option<u64> {
    let s = cstr(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// A size field: octal, or GNU base-256 (high bit set) for large files.
fn parse_size(b: &[u8]) -> Result<u64, Error> {
    if b[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(b[0] & 0x7f);
        for x in &b[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(u64::from(*x))).ok_or_else(|| invalid("size too large"))?;
        }
        return Ok(v);
    }
    parse_octal(b).ok_or_else(|| invalid("bad size field"))
}

/// Pax records: `<length> <key>=<value>\n`.
fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|c| *c == b' ').ok_or_else(|| invalid("bad pax record"))?;
        let len: usize = std::str::from_utf8(&data[..space]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| invalid("bad pax record"))?;
        if len <= space + 1 || len > data.len() {
            return Err(invalid("bad pax record"));
        }
        let record = &data[space + 1..len];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(eq) = record.iter().position(|c| *c == b'=') {
            out.push((String::from_utf8_lossy(&record[..eq]).into_owned(), String::from_utf8_lossy(&record[eq + 1..]).into_owned()));
        }
        data = &data[len..];
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ustar header for `name` (any length: long names get a pax header first).
    pub(crate) fn header(name: &str, size: u64, kind: u8) -> Vec<u8> {
        let mut out = Vec::new();
        if name.len() > 100 {
            let record = format!("path={name}\n");
            let mut len = record.len() + 2;
            while format!("{len} {record}").len() != len {
                len += 1;
            }
            let pax = format!("{len} {record}");
            out.extend(header("pax", pax.len() as u64, b'x'));
            out.extend(pax.as_bytes());
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        let mut h = vec![0u8; 512];
        let short = &name.as_bytes()[..name.len().min(100)];
        h[..short.len()].copy_from_slice(short);
        h[100..107].copy_from_slice(b"0000644");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend(h);
        out
    }

    /// A tar archive of (name, data) files, with a directory entry first.
    pub(crate) fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = header("dir/", 0, b'5');
        for (name, data) in files {
            out.extend(header(name, data.len() as u64, b'0'));
            out.extend(*data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend(vec![0u8; 1024]);
        out
    }

    fn stream(data: Vec<u8>, chunk: usize) -> ByteStream {
        let chunks: Vec<Result<Bytes, std::io::Error>> = data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures::stream::iter(chunks))
    }

    async fn entries(mut r: TarReader) -> Result<Vec<(Entry, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        while let Some(e) = r.next_entry().await? {
            let mut data = Vec::new();
            if e.file && e.path.ends_with('2') {
                while let Some(c) = r.read().await? {
                    data.extend_from_slice(&c);
                }
            }
            out.push((e, data));
        }
        Ok(out)
    }

    #[tokio::test]
    async fn plain_gzip_and_bzip2_archives_read_alike() {
        let long = format!("c/{}", "n".repeat(150));
        let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let tar = archive(&[("c/one", b"1"), (&long, b"long"), ("c/two2", &big)]);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let bz = {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        for (data, c) in [(tar.clone(), Compression::None), (gz, Compression::Gzip), (bz, Compression::Bzip2)] {
            let got = entries(TarReader::new(stream(data, 777), c)).await.unwrap();
            let names: Vec<_> = got.iter().map(|(e, _)| (e.path.as_str(), e.file, e.size)).collect();
            assert_eq!(names, vec![("dir/", false, 0), ("c/one", true, 1), (long.as_str(), true, 4), ("c/two2", true, 70_000)], "{c:?}");
            assert!(got[3].1 == big, "{c:?}: data read through");
        }
    }

    #[tokio::test]
    async fn broken_archives_are_refused() {
        let mut tar = archive(&[("a", b"x")]);
        tar[512 + 10] ^= 1; // the file's header
        assert!(matches!(entries(TarReader::new(stream(tar, 100), Compression::None)).await, Err(Error::BadRequest(_))));
        let tar = archive(&[("a", b"xyz")]);
        let cut = tar[..1024 + 1].to_vec();
        let mut r = TarReader::new(stream(cut, 100), Compression::None);
        r.next_entry().await.unwrap();
        r.next_entry().await.unwrap();
        assert_eq!(r.read().await.unwrap().as_deref(), Some(&b"x"[..]));
        assert!(r.read().await.is_err(), "data cut short");
        assert!(entries(TarReader::new(stream(b"not gzip".to_vec(), 3), Compression::Gzip)).await.is_err());
        assert_eq!(Compression::from_param("tar.bz2"), Some(Compression::Bzip2));
        assert_eq!(Compression::from_param("zip"), None);
        assert_eq!(parse_pax(b"30 SCHILY.xattr.user.meta.a=b\n").unwrap(), vec![("SCHILY.xattr.user.meta.a".into(), "b".into())]);
    }
}
