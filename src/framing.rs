//! Refusing ambiguous request framing (spec §0.23): a request with both `Content-Length` and
//! `Transfer-Encoding` must answer 400 and close the connection. hyper accepts such a request
//! (it drops `Content-Length`, uses the chunked framing and closes afterwards), and the handler
//! never sees that both were sent — the classic ingredient of request smuggling behind a proxy
//! that trusts the other header. So each connection's bytes pass through [`FramingCheck`], which
//! follows the request heads and bodies and, on a head with both, rewrites its
//! `Transfer-Encoding` to a coding hyper refuses: hyper then answers 400 and closes.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Heads longer than this are passed on unexamined (hyper refuses them anyway).
const MAX_HEAD: usize = 80 * 1024;
/// A chunk-size line or trailer line longer than this stops the examination (hyper refuses it).
const MAX_LINE: usize = 4096;
const READ_SIZE: usize = 64 * 1024;

/// What the scanner expects next on the connection.
#[derive(Debug)]
enum Scan {
    /// A request head, collected in `pending` until its blank line.
    Head,
    /// This many more bytes of a `Content-Length` body.
    Body(u64),
    /// A chunk-size line (collected so far).
    ChunkSize(Vec<u8>),
    /// This many more bytes of chunk data, then its CRLF.
    ChunkData(u64),
    /// This many bytes of the CRLF after chunk data.
    ChunkEnd(u8),
    /// Trailer lines after the last chunk, until a blank one (the line so far).
    Trailer(Vec<u8>),
    /// Stop examining: the connection ends after this request, or hyper will refuse it.
    Off,
}

/// An I/O stream whose incoming request heads are checked for conflicting framing.
pub struct FramingCheck<S> {
    inner: S,
    scan: Scan,
    /// Head bytes held back until the head is complete.
    pending: BytesMut,
    /// Bytes examined and ready for hyper.
    ready: BytesMut,
    read_buf: Box<[u8]>,
}

impl<S> FramingCheck<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            scan: Scan::Head,
            pending: BytesMut::new(),
            ready: BytesMut::new(),
            read_buf: vec![0; READ_SIZE].into_boxed_slice(),
        }
    }

    /// Examines `data`, moving what may go on into `ready`.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.scan {
                Scan::Off => {
                    self.ready.extend_from_slice(data);
                    return;
                }
                Scan::Body(left) | Scan::ChunkData(left) => {
                    let take = (*left).min(data.len() as u64) as usize;
                    self.ready.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    *left -= take as u64;
                    if *left == 0 {
                        self.scan = match self.scan {
                            Scan::ChunkData(_) => Scan::ChunkEnd(2),
                            _ => Scan::Head,
                        };
                    }
                }
                Scan::ChunkEnd(left) => {
                    let take = (*left as usize).min(data.len());
                    self.ready.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    *left -= take as u8;
                    if *left == 0 {
                        self.scan = Scan::ChunkSize(vec![]);
                    }
                }
                Scan::ChunkSize(line) | Scan::Trailer(line) => {
                    let end = data.iter().position(|&b| b == b'\n');
                    let take = end.map_or(data.len(), |i| i + 1);
                    line.extend_from_slice(&data[..take]);
                    self.ready.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if line.len() > MAX_LINE {
                        self.scan = Scan::Off;
                    } else if end.is_some() {
                        self.scan = match &self.scan {
                            Scan::ChunkSize(line) => match chunk_size(line) {
                                Some(0) => Scan::Trailer(vec![]),
                                Some(n) => Scan::ChunkData(n),
                                None => Scan::Off,
                            },
                            Scan::Trailer(line) if is_blank(line) => Scan::Head,
                            _ => Scan::Trailer(vec![]),
                        };
                    }
                }
                Scan::Head => {
                    let start = self.pending.len().saturating_sub(3);
                    let take = data
                        .len()
                        .min(MAX_HEAD + 4 - self.pending.len().min(MAX_HEAD));
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    match find(&self.pending[start..], b"\r\n\r\n") {
                        Some(i) => {
                            let end = start + i + 4;
                            let rest = self.pending.split_off(end);
                            let head = std::mem::take(&mut self.pending);
                            let (head, next) = examine(&head);
                            self.ready.extend_from_slice(&head);
                            self.scan = next;
                            // Bytes after the head go through the new state.
                            let rest = rest.freeze();
                            self.feed(&rest);
                        }
                        None if self.pending.len() > MAX_HEAD => {
                            self.ready.extend_from_slice(&self.pending.split());
                            self.scan = Scan::Off;
                        }
                        None => {}
                    }
                }
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.split(';').next()?.trim();
    u64::from_str_radix(size, 16).ok()
}

/// The head to hand on and what follows it. A head with both framing headers gets a
/// `Transfer-Encoding` hyper refuses with 400.
fn examine(head: &[u8]) -> (Bytes, Scan) {
    let Ok(text) = std::str::from_utf8(head) else {
        return (Bytes::copy_from_slice(head), Scan::Off);
    };
    let mut content_length = None;
    let mut transfer_encoding = false;
    for line in text.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.trim().parse::<u64>().ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = true;
        }
    }
    match (content_length, transfer_encoding) {
        (Some(_), true) => {
            let rewritten: String = text
                .split_inclusive("\r\n")
                .map(|line| match line.split_once(':') {
                    Some((name, _)) if name.eq_ignore_ascii_case("transfer-encoding") => {
                        "Transfer-Encoding: refused-with-content-length\r\n"
                    }
                    _ => line,
                })
                .collect();
            (Bytes::from(rewritten), Scan::Off)
        }
        (_, true) => (Bytes::copy_from_slice(head), Scan::ChunkSize(vec![])),
        (Some(Some(0)) | None, false) => (Bytes::copy_from_slice(head), Scan::Head),
        (Some(Some(n)), false) => (Bytes::copy_from_slice(head), Scan::Body(n)),
        // An unreadable length: hyper refuses the request.
        (Some(None), false) => (Bytes::copy_from_slice(head), Scan::Off),
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingCheck<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // Body bytes need no examination beyond counting: while the caller's buffer cannot
            // hold more than the rest of the body, they are read straight into it, without
            // passing through (and being copied out of) this check's own buffers.
            if this.ready.is_empty() {
                if let Scan::Body(left) | Scan::ChunkData(left) = &mut this.scan {
                    if *left > 0 && buf.remaining() as u64 <= *left {
                        let before = buf.filled().len();
                        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
                        let n = (buf.filled().len() - before) as u64;
                        *left -= n;
                        if *left == 0 {
                            this.scan = match this.scan {
                                Scan::ChunkData(_) => Scan::ChunkEnd(2),
                                _ => Scan::Head,
                            };
                        }
                        return Poll::Ready(Ok(()));
                    }
                }
            }
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.read_buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = read.filled().len();
                    if filled == 0 {
                        // The end: whatever was held back goes on as it is.
                        let held = this.pending.split();
                        if held.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.ready.extend_from_slice(&held);
                        continue;
                    }
                    // `feed` borrows `self`: the read buffer is taken out for the call.
                    let data = std::mem::take(&mut this.read_buf);
                    this.feed(&data[..filled]);
                    this.read_buf = data;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingCheck<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[&[u8]]) -> (Vec<u8>, FramingCheck<()>) {
        let mut check = FramingCheck::new(());
        for piece in input {
            check.feed(piece);
        }
        let out = check.ready.split().to_vec();
        (out, check)
    }

    #[test]
    fn plain_requests_pass_unchanged_in_any_split() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\
            PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: v\r\n\r\n\
            GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        for split in 0..stream.len() {
            let (out, check) = run(&[&stream[..split], &stream[split..]]);
            assert_eq!(out, stream, "split at {split}");
            assert!(matches!(check.scan, Scan::Head), "{:?}", check.scan);
        }
    }

    #[test]
    fn both_framings_get_a_refused_coding_even_after_chunked_requests() {
        let stream: &[u8] = b"PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n0\r\n\r\n\
            POST /a HTTP/1.1\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n";
        for split in [1, 30, 60, stream.len() - 5] {
            let (out, check) = run(&[&stream[..split], &stream[split..]]);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("Transfer-Encoding: refused-with-content-length\r\n"),
                "{text}"
            );
            assert!(!text.contains("transfer-encoding: chunked"), "{text}");
            assert!(text.starts_with("PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked"));
            assert!(matches!(check.scan, Scan::Off));
        }
    }

    /// Reads `input` through the check with reads of at most `read_size` bytes.
    async fn read_through(input: &[u8], read_size: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut check = FramingCheck::new(input);
        let (mut out, mut buf) = (vec![], vec![0; read_size]);
        loop {
            let n = check.read(&mut buf).await.unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[tokio::test]
    async fn bodies_read_straight_through_keep_the_scan_in_step() {
        // Large bodies take the direct path; the requests behind them must still be examined.
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream =
            format!("PUT /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"PUT /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"\r\n0\r\n\r\n");
        let plain = stream.clone();
        stream.extend_from_slice(
            b"POST /c HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for read_size in [1000, 64 * 1024, 1 << 20] {
            let out = read_through(&stream, read_size).await;
            assert_eq!(out[..plain.len()], plain[..], "read size {read_size}");
            let rest = String::from_utf8(out[plain.len()..].to_vec()).unwrap();
            assert!(
                rest.contains("Transfer-Encoding: refused-with-content-length\r\n"),
                "read size {read_size}: {rest}"
            );
        }
    }

    #[test]
    fn an_unfinished_head_is_held_back() {
        let head: &[u8] = b"POST /a HTTP/1.1\r\nContent-Len";
        let (out, check) = run(&[head]);
        assert!(out.is_empty());
        assert_eq!(check.pending.as_ref(), head);
    }
}
