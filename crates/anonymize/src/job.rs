//! Running a job over a stream: parse → transform → (suppress) → write.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ring::hmac;
use serde::Serialize;
use serde_json::Value;

use crate::detect::Scanner;
use crate::kanon::{self, Classes};
use crate::spec::{Format, OnError, Spec, Transform};
use crate::transform::{self, Ctx};
use crate::{Error, Result};

/// What a job did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Report {
    /// Data rows read (malformed ones included).
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows removed by k-anonymity suppression.
    pub rows_suppressed: u64,
    /// Malformed rows (skipped, or the first one failed the job).
    pub malformed_rows: u64,
    /// Line numbers of the first malformed rows.
    pub malformed_lines: Vec<u64>,
    /// Values changed, per column and transform.
    pub changed: BTreeMap<String, BTreeMap<String, u64>>,
    /// PII found by `scrub`, per detector.
    pub pii_found: BTreeMap<String, u64>,
    /// Smallest equivalence class before suppression.
    pub k_before: Option<u64>,
    /// Smallest equivalence class after suppression.
    pub k_after: Option<u64>,
    /// Fewest distinct sensitive values in a class, before.
    pub l_before: Option<u64>,
    /// Same, after.
    pub l_after: Option<u64>,
    /// Equivalence classes before suppression.
    pub classes_before: Option<u64>,
    /// Equivalence classes after.
    pub classes_after: Option<u64>,
    /// Output bytes.
    pub bytes_written: u64,
    /// With `scan = true`: PII still found in the output, per column and detector.
    #[serde(default)]
    pub scan_findings: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A validated job: spec, namespace key, compiled detectors.
pub struct Job {
    spec: Spec,
    key: hmac::Key,
    scanner: Scanner,
    progress: Option<Arc<AtomicU64>>,
}

struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Io(e.to_string())
}

/// Read a JSON value at a dotted path.
fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, seg| cur.get(seg))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Job {
    /// Build a job; fails on a bad custom regex.
    pub fn new(spec: Spec, key: [u8; 32]) -> Result<Self> {
        let scanner = Scanner::new(&spec.scrub)?;
        Ok(Self {
            spec,
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            scanner,
            progress: None,
        })
    }

    /// Count rows into `counter` as they are processed.
    pub fn with_progress(mut self, counter: Arc<AtomicU64>) -> Self {
        self.progress = Some(counter);
        self
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Refuse a spec naming columns the CSV header lacks.
    pub fn check_header(&self, header: &[String]) -> Result<()> {
        for c in self.spec.referenced_columns() {
            if !header.iter().any(|h| h == c) {
                return Err(Error::Spec(format!(
                    "column `{c}` is not in the input (columns: {})",
                    header.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn csv_reader<R: Read>(&self, input: R) -> csv::Reader<R> {
        csv::ReaderBuilder::new()
            .delimiter(self.spec.delimiter as u8)
            .has_headers(true)
            .flexible(false)
            .from_reader(input)
    }

    /// The CSV header row.
    pub fn csv_header<R: Read>(&self, input: R) -> Result<Vec<String>> {
        let mut r = self.csv_reader(input);
        Ok(r.headers().map_err(io)?.iter().map(str::to_owned).collect())
    }

    /// First pass for k-anonymity: the equivalence classes of the input.
    pub fn classes<R: Read>(&self, input: R) -> Result<Classes> {
        let mut classes = Classes::default();
        let mut report = Report::default();
        self.process(
            input,
            None::<&mut Vec<u8>>,
            None,
            &mut report,
            Some(&mut classes),
        )?;
        Ok(classes)
    }

    /// Transform `input` into `output`. With k-anonymity in the spec,
    /// `classes` must come from [`Job::classes`] over the same input.
    pub fn run<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        classes: Option<&Classes>,
    ) -> Result<Report> {
        if self.spec.kanon.is_some() && classes.is_none() {
            return Err(Error::Spec(
                "k-anonymity needs the classes pass first".into(),
            ));
        }
        let mut report = Report::default();
        let mut out = Counting {
            inner: output,
            n: 0,
        };
        self.process(input, Some(&mut out), classes, &mut report, None)?;
        out.flush().map_err(io)?;
        report.bytes_written = out.n;
        if let (Some(k), Some(c)) = (&self.spec.kanon, classes) {
            let (kb, lb, nb) = c.stats(|_| true);
            let (ka, la, na) = c.stats(|n| n >= k.k_min);
            report.k_before = Some(kb);
            report.k_after = Some(ka);
            report.classes_before = Some(nb);
            report.classes_after = Some(na);
            if k.sensitive.is_some() {
                report.l_before = Some(lb);
                report.l_after = Some(la);
            }
        }
        Ok(report)
    }

    fn malformed(&self, report: &mut Report, line: u64, detail: String) -> Result<()> {
        report.malformed_rows += 1;
        if report.malformed_lines.len() < 100 {
            report.malformed_lines.push(line);
        }
        match self.spec.on_error {
            OnError::Skip => Ok(()),
            OnError::Fail => Err(Error::Malformed { line, detail }),
        }
    }

    fn tick(&self) {
        if let Some(p) = &self.progress {
            p.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn process<R: Read, W: Write>(
        &self,
        input: R,
        output: Option<W>,
        classes: Option<&Classes>,
        report: &mut Report,
        collect: Option<&mut Classes>,
    ) -> Result<()> {
        match self.spec.format {
            Format::Csv => self.process_csv(input, output, classes, report, collect),
            Format::Jsonl => self.process_jsonl(input, output, classes, report, collect),
        }
    }

    fn process_csv<R: Read, W: Write>(
        &self,
        input: R,
        output: Option<W>,
        classes: Option<&Classes>,
        report: &mut Report,
        mut collect: Option<&mut Classes>,
    ) -> Result<()> {
        let mut r = self.csv_reader(input);
        let header: Vec<String> = r.headers().map_err(io)?.iter().map(str::to_owned).collect();
        self.check_header(&header)?;
        let idx: HashMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        let mut plan: Vec<Option<(&Transform, Option<usize>)>> = vec![None; header.len()];
        for c in &self.spec.columns {
            let subject = match &c.transform {
                Transform::DateShift { subject, .. } => idx.get(subject.as_str()).copied(),
                _ => None,
            };
            plan[idx[c.name.as_str()]] = Some((&c.transform, subject));
        }
        let qi: Vec<usize> = self
            .spec
            .kanon
            .iter()
            .flat_map(|k| k.quasi_identifiers.iter().map(|q| idx[q.as_str()]))
            .collect();
        let sensitive = self
            .spec
            .kanon
            .as_ref()
            .and_then(|k| k.sensitive.as_deref())
            .map(|s| idx[s]);
        let k_min = self.spec.kanon.as_ref().map(|k| k.k_min);
        let mut w = output.map(|o| {
            csv::WriterBuilder::new()
                .delimiter(self.spec.delimiter as u8)
                .from_writer(o)
        });
        if let Some(w) = w.as_mut() {
            let kept: Vec<&str> = header
                .iter()
                .zip(&plan)
                .filter(|(_, p)| !matches!(p, Some((Transform::Drop, _))))
                .map(|(h, _)| h.as_str())
                .collect();
            w.write_record(&kept).map_err(io)?;
        }
        let mut pii = BTreeMap::new();
        let mut rec = csv::StringRecord::new();
        // Changed-value counts per column index (names attached at the end).
        let mut changed = vec![0u64; header.len()];
        loop {
            let line = r.position().line() + 1;
            match r.read_record(&mut rec) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    report.rows_read += 1;
                    self.tick();
                    let at = e.position().map_or(line, |p| p.line());
                    self.malformed(report, at, e.to_string())?;
                    continue;
                }
            }
            report.rows_read += 1;
            self.tick();
            let collecting = collect.is_some();
            let mut fields: Vec<Option<std::borrow::Cow<'_, str>>> =
                Vec::with_capacity(header.len());
            let mut ctx = Ctx {
                key: &self.key,
                scanner: &self.scanner,
                pii: &mut pii,
            };
            for (i, v) in rec.iter().enumerate() {
                // In the classes pass only quasi-identifiers matter.
                if collecting && !qi.contains(&i) {
                    fields.push(None);
                    continue;
                }
                match plan[i] {
                    None => fields.push(Some(std::borrow::Cow::Borrowed(v))),
                    Some((t, subj)) => {
                        let (out, did) = transform::apply(t, v, subj.map(|s| &rec[s]), &mut ctx);
                        if did && !collecting {
                            changed[i] += 1;
                        }
                        fields.push(out.map(std::borrow::Cow::Owned));
                    }
                }
            }
            if !qi.is_empty() {
                let vals: Vec<&str> = qi
                    .iter()
                    .map(|&i| fields[i].as_deref().unwrap_or(""))
                    .collect();
                let key = kanon::key(&vals);
                if let Some(c) = collect.as_deref_mut() {
                    c.add(key, sensitive.map(|s| &rec[s]));
                    continue;
                }
                if let (Some(c), Some(k)) = (classes, k_min) {
                    if c.count(&key) < k {
                        report.rows_suppressed += 1;
                        continue;
                    }
                }
            }
            if self.spec.scan && w.is_some() {
                for (i, f) in fields.iter().enumerate() {
                    let Some(f) = f else { continue };
                    for found in self.scanner.find(f) {
                        *report
                            .scan_findings
                            .entry(header[i].clone())
                            .or_default()
                            .entry(found.kind)
                            .or_default() += 1;
                    }
                }
            }
            if let Some(w) = w.as_mut() {
                w.write_record(fields.iter().flatten().map(|c| c.as_bytes()))
                    .map_err(io)?;
                report.rows_written += 1;
            }
        }
        if collect.is_none() {
            report.pii_found = pii;
            for (i, n) in changed.iter().enumerate().filter(|(_, n)| **n > 0) {
                if let Some((t, _)) = plan[i] {
                    report
                        .changed
                        .entry(header[i].clone())
                        .or_default()
                        .insert(transform::name(t).to_owned(), *n);
                }
            }
        }
        if let Some(mut w) = w {
            w.flush().map_err(io)?;
        }
        Ok(())
    }

    fn process_jsonl<R: Read, W: Write>(
        &self,
        input: R,
        output: Option<W>,
        classes: Option<&Classes>,
        report: &mut Report,
        mut collect: Option<&mut Classes>,
    ) -> Result<()> {
        let mut out = output;
        let k_min = self.spec.kanon.as_ref().map(|k| k.k_min);
        let mut pii = BTreeMap::new();
        let mut reader = BufReader::with_capacity(1 << 16, input);
        let mut line = String::new();
        let mut lineno = 0u64;
        loop {
            line.clear();
            let n = reader.read_line(&mut line).map_err(|e| Error::Malformed {
                line: lineno + 1,
                detail: e.to_string(),
            });
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    // Not UTF-8: the rest of the stream cannot be trusted either.
                    report.rows_read += 1;
                    self.malformed(report, lineno + 1, e.to_string())?;
                    return Ok(());
                }
            };
            if n == 0 {
                break;
            }
            lineno += 1;
            if line.trim().is_empty() {
                continue;
            }
            report.rows_read += 1;
            self.tick();
            let mut v: Value = match serde_json::from_str(&line) {
                Ok(v @ Value::Object(_)) => v,
                Ok(_) => {
                    self.malformed(report, lineno, "not a JSON object".into())?;
                    continue;
                }
                Err(e) => {
                    self.malformed(report, lineno, e.to_string())?;
                    continue;
                }
            };
            let original = v.clone();
            let mut ctx = Ctx {
                key: &self.key,
                scanner: &self.scanner,
                pii: &mut pii,
            };
            for c in &self.spec.columns {
                let Some(cur) = get_path(&v, &c.name) else {
                    continue;
                };
                if cur.is_null() {
                    continue;
                }
                let subject = match &c.transform {
                    Transform::DateShift { subject, .. } => {
                        get_path(&original, subject).and_then(scalar)
                    }
                    _ => None,
                };
                let (new, changed) = match scalar(cur) {
                    Some(s) => transform::apply(&c.transform, &s, subject.as_deref(), &mut ctx),
                    None => match &c.transform {
                        Transform::Drop => (None, true),
                        Transform::Replace { value } => (Some(value.clone()), true),
                        _ => (Some("[REDACTED]".into()), true),
                    },
                };
                if changed && collect.is_none() {
                    *report
                        .changed
                        .entry(c.name.clone())
                        .or_default()
                        .entry(transform::name(&c.transform).to_owned())
                        .or_default() += 1;
                }
                set_path(&mut v, &c.name, new);
            }
            if let Some(k) = &self.spec.kanon {
                let vals: Vec<String> = k
                    .quasi_identifiers
                    .iter()
                    .map(|q| get_path(&v, q).and_then(scalar).unwrap_or_default())
                    .collect();
                let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
                let key = kanon::key(&refs);
                if let Some(c) = collect.as_deref_mut() {
                    let s = k
                        .sensitive
                        .as_deref()
                        .and_then(|s| get_path(&original, s))
                        .and_then(scalar);
                    c.add(key, s.as_deref());
                    continue;
                }
                if let (Some(c), Some(kmin)) = (classes, k_min) {
                    if c.count(&key) < kmin {
                        report.rows_suppressed += 1;
                        continue;
                    }
                }
            }
            if let Some(o) = out.as_mut() {
                serde_json::to_writer(&mut *o, &v).map_err(io)?;
                o.write_all(b"\n").map_err(io)?;
                report.rows_written += 1;
            }
        }
        if collect.is_none() {
            report.pii_found = pii;
        }
        Ok(())
    }
}

/// Set (or with `None` remove) the value at a dotted path.
fn set_path(v: &mut Value, path: &str, new: Option<String>) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (
            p.split('.').try_fold(&mut *v, |cur, seg| cur.get_mut(seg)),
            l,
        ),
        None => (Some(v), path),
    };
    if let Some(Value::Object(map)) = parent {
        match new {
            Some(s) => {
                map.insert(last.to_owned(), Value::String(s));
            }
            None => {
                map.remove(last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: &str) -> Job {
        Job::new(Spec::parse(spec).unwrap(), [3; 32]).unwrap()
    }

    #[test]
    fn csv_quotes_newlines_and_delimiters() {
        let j = job("format = \"csv\"\ndelimiter = \";\"\n[[columns]]\nname = \"notes\"\ntransform = \"scrub\"\n[[columns]]\nname = \"ssn\"\ntransform = \"drop\"\n");
        let input =
            "id;ssn;notes\n1;123-45-6789;\"line one\nmail: a@b.io; ok\"\n2;987-65-4321;plain\n";
        let mut out = Vec::new();
        let r = j.run(input.as_bytes(), &mut out, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "id;notes\n1;\"line one\nmail: [EMAIL]; ok\"\n2;plain\n"
        );
        assert_eq!(r.rows_written, 2);
        assert_eq!(r.changed["ssn"]["drop"], 2);
        assert_eq!(r.pii_found["email"], 1);
    }

    #[test]
    fn malformed_rows_are_counted_or_fail() {
        let input = "a,b\n1,2\n3\n4,5\n";
        let j = job("format = \"csv\"\n");
        let mut out = Vec::new();
        let r = j.run(input.as_bytes(), &mut out, None).unwrap();
        assert_eq!((r.rows_read, r.rows_written, r.malformed_rows), (3, 2, 1));
        assert_eq!(r.malformed_lines, [3]);
        let j = job("format = \"csv\"\non_error = \"fail\"\n");
        let err = j.run(input.as_bytes(), Vec::new(), None).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err:?}");
    }

    #[test]
    fn missing_columns_are_refused() {
        let j = job("format = \"csv\"\n[[columns]]\nname = \"nope\"\ntransform = \"redact\"\n");
        assert!(matches!(
            j.run("a,b\n1,2\n".as_bytes(), Vec::new(), None),
            Err(Error::Spec(_))
        ));
        assert!(Spec::parse(
            "format = \"csv\"\n[[columns]]\nname = \"a\"\ntransform = \"explode\"\n"
        )
        .is_err());
        assert!(Job::new(
            Spec::parse(
                "format = \"csv\"\n[scrub]\ncustom = [{ name = \"x\", pattern = \"(\" }]\n"
            )
            .unwrap(),
            [0; 32]
        )
        .is_err());
    }

    #[test]
    fn jsonl_nested_paths() {
        let j = job("format = \"jsonl\"\n[[columns]]\nname = \"user.email\"\ntransform = \"pseudonymize\"\n[[columns]]\nname = \"user.ssn\"\ntransform = \"drop\"\n");
        let input = "{\"user\":{\"email\":\"a@b.io\",\"ssn\":\"123-45-6789\"},\"n\":1}\nnot json\n";
        let mut out = Vec::new();
        let r = j.run(input.as_bytes(), &mut out, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains("a@b.io") && !text.contains("6789") && text.contains("\"p_"),
            "{text}"
        );
        assert_eq!((r.rows_written, r.malformed_rows), (1, 1));
    }

    #[test]
    fn a_whole_file_scan_reports_pii_left_in_other_columns() {
        let j = job(
            "format = \"csv\"\nscan = true\n[[columns]]\nname = \"a\"\ntransform = \"scrub\"\n",
        );
        let input = "a,b\nmail x@y.io,call 192.168.0.1\n";
        let r = j.run(input.as_bytes(), Vec::new(), None).unwrap();
        assert!(!r.scan_findings.contains_key("a"));
        assert_eq!(r.scan_findings["b"]["ipv4"], 1);
    }

    #[test]
    fn k_anonymity_suppresses_small_classes() {
        let spec = "format = \"csv\"\n[[columns]]\nname = \"age\"\ntransform = \"generalize\"\nkind = \"bucket\"\nwidth = 10\n[kanon]\nquasi_identifiers = [\"age\", \"zip\"]\nk_min = 2\nsensitive = \"dx\"\n";
        let j = job(spec);
        let input = "age,zip,dx\n31,100,a\n35,100,b\n38,100,a\n52,200,c\n";
        let classes = j.classes(input.as_bytes()).unwrap();
        let mut out = Vec::new();
        let r = j.run(input.as_bytes(), &mut out, Some(&classes)).unwrap();
        assert_eq!((r.k_before, r.k_after), (Some(1), Some(3)));
        assert_eq!((r.l_before, r.l_after), (Some(1), Some(2)));
        assert_eq!((r.classes_before, r.classes_after), (Some(2), Some(1)));
        assert_eq!(r.rows_suppressed, 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "age,zip,dx\n30-40,100,a\n30-40,100,b\n30-40,100,a\n"
        );
    }
}
