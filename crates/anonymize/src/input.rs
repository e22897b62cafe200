//! Input guards: a CSV quote tracker under the `csv` reader, and a bounded
//! line reader for JSON Lines.
//!
//! The `csv` crate is lenient by design: a quote that is never closed makes
//! the rest of the input one field, and a record may grow without limit.
//! [`QuoteCheck`] follows RFC 4180 quoting over the raw bytes the reader
//! pulls, so the job knows when the input ended inside a quoted field and
//! stops a record that grows past the spec's `max_record_bytes` before it
//! is buffered.

use std::io::{BufRead, Read};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
}

/// A `Read` that tracks CSV quoting and record sizes of what passes through.
pub(crate) struct QuoteCheck<R> {
    inner: R,
    delimiter: u8,
    state: State,
    /// 1-based line of the byte being read.
    line: u64,
    /// Line where the open quoted field started.
    quote_line: u64,
    record_start: u64,
    record_bytes: usize,
    limit: usize,
    eof: bool,
    oversized: Option<u64>,
}

impl<R: Read> QuoteCheck<R> {
    pub(crate) fn new(inner: R, delimiter: u8, limit: usize) -> Self {
        QuoteCheck {
            inner,
            delimiter,
            state: State::FieldStart,
            line: 1,
            quote_line: 0,
            record_start: 1,
            record_bytes: 0,
            limit,
            eof: false,
            oversized: None,
        }
    }

    /// At the end of the input inside a quoted field: the line it opened on.
    pub(crate) fn unterminated(&self) -> Option<u64> {
        (self.eof && self.state == State::Quoted).then_some(self.quote_line)
    }

    /// The start line of a record that passed the size limit.
    pub(crate) fn oversized(&self) -> Option<u64> {
        self.oversized
    }

    /// Lines seen so far.
    pub(crate) fn lines(&self) -> u64 {
        self.line
    }

    /// The record size limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn too_long(&mut self) -> std::io::Error {
        self.oversized = Some(self.record_start);
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the record starting at line {} is longer than {} bytes",
                self.record_start, self.limit
            ),
        )
    }

    /// Follow the quoting over `bytes`, one table look-up per byte (a
    /// CSV has a delimiter every few bytes, too often for a vector search
    /// to pay). A record ends at a newline outside quotes (`\r\n`
    /// included; a lone `\r` is data here).
    fn track(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        const ORDINARY: u8 = 0;
        const QUOTE: u8 = 1;
        const DELIMITER: u8 = 2;
        const NEWLINE: u8 = 3;
        let mut class = [ORDINARY; 256];
        class[usize::from(b'"')] = QUOTE;
        class[usize::from(self.delimiter)] = DELIMITER;
        class[usize::from(b'\n')] = NEWLINE;
        for &b in bytes {
            let c = class[usize::from(b)];
            self.record_bytes += 1;
            match (self.state, c) {
                (State::Quoted, QUOTE) => self.state = State::QuoteInQuoted,
                (State::Quoted, NEWLINE) => self.line += 1,
                (State::Quoted, _) => {}
                (_, NEWLINE) => {
                    self.line += 1;
                    self.state = State::FieldStart;
                    self.record_bytes = 0;
                    self.record_start = self.line;
                }
                (_, DELIMITER) => self.state = State::FieldStart,
                // A quote opens a field at its start, is an escaped quote
                // right after a closing one, and is data elsewhere.
                (State::FieldStart, QUOTE) => {
                    self.quote_line = self.line;
                    self.state = State::Quoted;
                }
                (State::QuoteInQuoted, QUOTE) => self.state = State::Quoted,
                (State::Unquoted, QUOTE) => {}
                (_, _) => self.state = State::Unquoted,
            }
            if self.record_bytes > self.limit {
                return Err(self.too_long());
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for QuoteCheck<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.oversized.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "record too long",
            ));
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.eof = true;
        }
        self.track(&buf[..n])?;
        Ok(n)
    }
}

/// Read one line (up to and including `\n`) into `buf`, holding at most
/// `max` bytes of it: a longer line is consumed to its end and reported as
/// too long. Returns the bytes consumed (0 at the end) and whether the line
/// was too long.
pub(crate) fn read_line_bounded<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((consumed, too_long));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > max + usize::from(done) {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, too_long));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(input: &[u8], limit: usize) -> (QuoteCheck<&[u8]>, std::io::Result<()>) {
        let mut q = QuoteCheck::new(input, b',', limit);
        let mut buf = [0u8; 3];
        let res = loop {
            match q.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        (q, res)
    }

    #[test]
    fn quotes_are_followed_across_reads() {
        let (q, r) = drain(b"a,b\n1,\"x\"\"y\nz\"\n2,3\n", 100);
        assert!(r.is_ok());
        assert_eq!(q.unterminated(), None);
        let (q, _) = drain(b"a,b\n1,2\n3,\"open\n4,5\n", 100);
        assert_eq!(q.unterminated(), Some(3));
        // A quote inside an unquoted field is literal, as the csv crate reads it.
        let (q, _) = drain(b"a,b\n1,x\"y\n", 100);
        assert_eq!(q.unterminated(), None);
    }

    #[test]
    fn a_record_over_the_limit_stops_the_reader() {
        let (q, r) = drain(b"a,b\n1,2\n\"12345678901\",x\n", 10);
        assert!(r.is_err());
        assert_eq!(q.oversized(), Some(3));
        // A newline inside quotes does not end the record.
        let (q, r) = drain(b"a\n\"123\n456\n789\n\"\n", 10);
        assert!(r.is_err());
        assert_eq!(q.oversized(), Some(2));
    }

    #[test]
    fn bounded_lines() {
        let mut r =
            std::io::BufReader::with_capacity(4, &b"short\nmuch too long line\nok\nlast"[..]);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let (n, long) = read_line_bounded(&mut r, &mut buf, 8).unwrap();
            if n == 0 {
                break;
            }
            out.push((String::from_utf8(buf.clone()).unwrap(), long));
        }
        assert_eq!(
            out,
            [
                ("short\n".to_owned(), false),
                (String::new(), true),
                ("ok\n".to_owned(), false),
                ("last".to_owned(), false)
            ]
        );
    }
}
