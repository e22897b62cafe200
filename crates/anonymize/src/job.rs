//! Running a job over a dataset: a survey pass over every file (input
//! checks, schema, k-anonymity classes, identifier values), a decision that
//! fails closed ([`Job::prepare`]), then a writing pass per file
//! ([`Job::run`]) and the dataset report ([`Job::finish`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ring::hmac;
use serde::Serialize;
use serde_json::Value;

use crate::detect::{IdMatcher, Scanner};
use crate::input::{read_line_bounded, QuoteCheck};
use crate::kanon::{self, Classes, Risk};
use crate::spec::{Format, OnError, Spec, Transform, Unlisted};
use crate::transform::{self, Ctx};
use crate::{Error, Result};

/// What a job did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Report {
    /// Data rows read (malformed ones included).
    pub rows_read: u64,
    /// Rows written.
    pub rows_written: u64,
    /// Rows removed by k-anonymity / l-diversity suppression.
    pub rows_suppressed: u64,
    /// Malformed rows (skipped, or the first one failed the job).
    pub malformed_rows: u64,
    /// Line numbers of the first malformed rows (per file: `file:line`
    /// once the server merges them).
    pub malformed_lines: Vec<u64>,
    /// Values changed, per column and transform.
    pub changed: BTreeMap<String, BTreeMap<String, u64>>,
    /// PII found by `scrub`, per detector.
    pub pii_found: BTreeMap<String, u64>,
    /// Smallest equivalence class before suppression.
    pub k_before: Option<u64>,
    /// Smallest equivalence class after suppression.
    pub k_after: Option<u64>,
    /// Fewest distinct values of a sensitive column in a class, before.
    pub l_before: Option<u64>,
    /// Same, after.
    pub l_after: Option<u64>,
    /// Equivalence classes before suppression.
    pub classes_before: Option<u64>,
    /// Equivalence classes after.
    pub classes_after: Option<u64>,
    /// Share of rows suppression removed (0 to 1).
    #[serde(default)]
    pub suppressed_share: Option<f64>,
    /// Re-identification risk of the input (prosecutor model).
    #[serde(default)]
    pub risk_before: Option<Risk>,
    /// Re-identification risk of the output.
    #[serde(default)]
    pub risk_after: Option<Risk>,
    /// Output bytes.
    pub bytes_written: u64,
    /// Whether the output was scanned (`scan = true`).
    #[serde(default)]
    pub scanned: bool,
    /// With `scan = true`: PII still found in the output, per column and detector.
    #[serde(default)]
    pub scan_findings: BTreeMap<String, BTreeMap<String, u64>>,
    /// Input columns left out because the spec does not name them
    /// (`unlisted = "drop"`).
    #[serde(default)]
    pub unlisted_dropped: Vec<String>,
    /// Distinct identifier values removed from free text wherever they occur.
    #[serde(default)]
    pub identifier_values: u64,
    /// What the steward should know: empty files, columns that undo a
    /// generalization, risk not measured, swallowed records.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// What the survey pass learned from every file of a dataset.
#[derive(Debug)]
pub struct Survey {
    rows: u64,
    malformed: u64,
    classes: Option<Classes>,
    /// Spec paths that exist in some record (JSON Lines).
    seen: HashSet<String>,
    /// Input paths the spec does not name.
    unlisted: BTreeSet<String>,
    identifiers: HashSet<String>,
    identifier_bytes: usize,
    warnings: Vec<String>,
    dups: Vec<DupCheck>,
}

/// Whether a column released verbatim maps one-to-one onto the raw values
/// of a generalized quasi-identifier (and so undoes the generalization).
#[derive(Debug)]
struct DupCheck {
    qi: String,
    column: String,
    forward: HashMap<String, String>,
    back: HashMap<String, String>,
    generalized: HashSet<String>,
    alive: bool,
}

/// Distinct value pairs a duplicate check follows before it gives up.
const DUP_CAP: usize = 4096;
/// Distinct JSON Lines fields a dataset may have.
const MAX_PATHS: usize = 4096;

impl DupCheck {
    fn add(&mut self, raw: &str, generalized: &str, column: &str) {
        if !self.alive {
            return;
        }
        let f = self
            .forward
            .entry(raw.to_owned())
            .or_insert_with(|| column.to_owned());
        let b = self
            .back
            .entry(column.to_owned())
            .or_insert_with(|| raw.to_owned());
        if f != column || b != raw || self.forward.len() > DUP_CAP {
            self.alive = false;
            return;
        }
        if self.generalized.len() < DUP_CAP {
            self.generalized.insert(generalized.to_owned());
        }
    }

    fn warning(&self) -> Option<String> {
        (self.alive && self.forward.len() > self.generalized.len() && self.forward.len() > 1).then(|| {
            format!(
                "column `{}` maps one-to-one onto the {} raw values of quasi-identifier `{}` and undoes its generalization (to {} values); drop or generalize it",
                self.column,
                self.forward.len(),
                self.qi,
                self.generalized.len()
            )
        })
    }
}

/// The outcome of [`Job::prepare`]: what the writing pass needs.
#[derive(Debug)]
pub struct Prepared {
    classes: Option<Classes>,
    identifiers: Option<IdMatcher>,
    dataset: Report,
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

/// Walk a JSON object: mark which listed paths exist, collect (refuse) or
/// remove (drop) fields the spec does not name.
fn classify(
    obj: &mut serde_json::Map<String, Value>,
    prefix: &str,
    listed: &[&str],
    drop: bool,
    seen: &mut HashSet<String>,
    unlisted: &mut BTreeSet<String>,
) {
    let mut remove = Vec::new();
    for (k, v) in obj.iter_mut() {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if listed.contains(&path.as_str()) {
            // A listed object covers what is under it; listed paths inside
            // it exist too.
            for l in listed.iter().filter(|l| {
                l.len() > path.len() && l.starts_with(&path) && l.as_bytes()[path.len()] == b'.'
            }) {
                if get_path(v, &l[path.len() + 1..]).is_some() {
                    seen.insert((*l).to_owned());
                }
            }
            seen.insert(path);
            continue;
        }
        let parent = listed.iter().any(|l| {
            l.len() > path.len() && l.starts_with(&path) && l.as_bytes()[path.len()] == b'.'
        });
        match v {
            Value::Object(inner) if parent => {
                seen.insert(path.clone());
                classify(inner, &path, listed, drop, seen, unlisted);
            }
            _ => {
                if drop {
                    remove.push(k.clone());
                }
                if unlisted.len() < MAX_PATHS {
                    unlisted.insert(path);
                }
            }
        }
    }
    for k in remove {
        obj.remove(&k);
    }
}

/// Every string value of a JSON tree with its path, for the scan.
fn leaves<'a>(v: &'a Value, path: &mut String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path.clone(), s)),
        Value::Object(m) => {
            for (k, x) in m {
                let n = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                leaves(x, path, out);
                path.truncate(n);
            }
        }
        Value::Array(a) => {
            for x in a {
                leaves(x, path, out);
            }
        }
        _ => {}
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

    /// Refuse a CSV header that repeats a name, lacks a column the spec
    /// names, or (with `unlisted = "refuse"`) has columns the spec does not
    /// name.
    pub fn check_header(&self, header: &[String]) -> Result<()> {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for h in header {
            *count.entry(h.as_str()).or_default() += 1;
        }
        let dup: Vec<&str> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(h, _)| *h)
            .collect();
        if !dup.is_empty() {
            return Err(Error::Spec(format!(
                "the header repeats column names: {}; rename them so each is transformed",
                dup.join(", ")
            )));
        }
        for c in self.spec.referenced_columns() {
            if !count.contains_key(c) {
                return Err(Error::Spec(format!(
                    "column `{c}` is not in the input (columns: {})",
                    header.join(", ")
                )));
            }
        }
        if self.spec.unlisted == Unlisted::Refuse {
            let listed = self.spec.listed_columns();
            let extra: Vec<&str> = header
                .iter()
                .map(String::as_str)
                .filter(|h| !listed.contains(h))
                .collect();
            if !extra.is_empty() {
                return Err(Error::Spec(format!(
                    "the spec does not say what to do with column(s) {}: give each a transform, list it in `keep`, or set unlisted = \"drop\"",
                    extra.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn csv_reader<R: Read>(&self, input: R) -> csv::Reader<QuoteCheck<R>> {
        csv::ReaderBuilder::new()
            .delimiter(self.spec.delimiter as u8)
            .has_headers(true)
            .flexible(false)
            .from_reader(QuoteCheck::new(
                input,
                self.spec.delimiter as u8,
                self.spec.max_record_bytes,
            ))
    }

    fn header<R: Read>(&self, r: &mut csv::Reader<QuoteCheck<R>>) -> Result<Option<Vec<String>>> {
        match r.headers() {
            Ok(h) if h.is_empty() || (h.len() == 1 && h[0].is_empty()) => Ok(None),
            Ok(h) => Ok(Some(h.iter().map(str::to_owned).collect())),
            Err(e) => Err(csv_fatal(r, e, 1)),
        }
    }

    /// The CSV header row (`None` for an empty input).
    pub fn csv_header<R: Read>(&self, input: R) -> Result<Option<Vec<String>>> {
        self.header(&mut self.csv_reader(input))
    }

    /// A new survey for this job.
    pub fn survey_start(&self) -> Survey {
        let mut dups = Vec::new();
        if let Some(k) = &self.spec.kanon {
            for q in &k.quasi_identifiers {
                let generalized = self.spec.columns.iter().any(|c| &c.name == q);
                if !generalized {
                    continue;
                }
                let verbatim = self.spec.keep.iter().chain(&k.sensitive).chain(
                    k.quasi_identifiers
                        .iter()
                        .filter(|o| !self.spec.columns.iter().any(|c| &&c.name == o)),
                );
                for c in verbatim {
                    if c != q {
                        dups.push(DupCheck {
                            qi: q.clone(),
                            column: c.clone(),
                            forward: HashMap::new(),
                            back: HashMap::new(),
                            generalized: HashSet::new(),
                            alive: true,
                        });
                    }
                }
            }
        }
        Survey {
            rows: 0,
            malformed: 0,
            classes: self
                .spec
                .kanon
                .as_ref()
                .map(|k| Classes::new(k.sensitive.len(), self.spec.max_class_bytes)),
            seen: HashSet::new(),
            unlisted: BTreeSet::new(),
            identifiers: HashSet::new(),
            identifier_bytes: 0,
            warnings: Vec::new(),
            dups,
        }
    }

    /// The survey pass over one file (`label` names it in warnings): every
    /// record is parsed and checked as the writing pass will, the
    /// k-anonymity classes and identifier values are collected.
    pub fn survey<R: Read>(&self, input: R, label: &str, s: &mut Survey) -> Result<()> {
        match self.spec.format {
            Format::Csv => self.survey_csv(input, label, s),
            Format::Jsonl => self.survey_jsonl(input, label, s),
        }
    }

    /// Survey and prepare a single input (a dataset of one file).
    pub fn prepare_one<R: Read>(&self, input: R) -> Result<Prepared> {
        let mut s = self.survey_start();
        self.survey(input, "input", &mut s)?;
        self.prepare(s)
    }

    fn survey_row(
        &self,
        s: &mut Survey,
        get: &dyn Fn(&str) -> Option<String>,
        pii: &mut BTreeMap<String, u64>,
    ) -> Result<()> {
        let mut ctx = Ctx {
            key: &self.key,
            scanner: &self.scanner,
            pii,
            identifiers: None,
        };
        let out_of = |name: &str, ctx: &mut Ctx<'_>| -> String {
            let raw = get(name).unwrap_or_default();
            match self.spec.columns.iter().find(|c| c.name == name) {
                Some(c) => {
                    let subject = match &c.transform {
                        Transform::DateShift { subject, .. } => get(subject),
                        _ => None,
                    };
                    transform::apply(&c.transform, &raw, subject.as_deref(), ctx)
                        .0
                        .unwrap_or_default()
                }
                None => raw,
            }
        };
        if let (Some(k), Some(classes)) = (&self.spec.kanon, s.classes.as_mut()) {
            let vals: Vec<String> = k
                .quasi_identifiers
                .iter()
                .map(|q| out_of(q, &mut ctx))
                .collect();
            for d in s.dups.iter_mut() {
                if let Some(i) = k.quasi_identifiers.iter().position(|q| *q == d.qi) {
                    let raw = get(&d.qi).unwrap_or_default();
                    let col = get(&d.column).unwrap_or_default();
                    d.add(&raw, &vals[i], &col);
                }
            }
            let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
            let sens: Vec<Option<String>> = k.sensitive.iter().map(|c| get(c)).collect();
            classes.add(kanon::key(&refs), &sens).map_err(|bytes| {
                Error::Privacy(format!(
                    "the k-anonymity classes need more than {} bytes of memory (max_class_bytes = {}, {bytes} reached): generalize the quasi-identifiers further",
                    self.spec.max_class_bytes, self.spec.max_class_bytes
                ))
            })?;
        }
        for c in self.spec.columns.iter().filter(|c| c.identifier) {
            let Some(v) = get(&c.name) else { continue };
            for value in crate::detect::identifier_forms(&v) {
                if s.identifiers.contains(&value) {
                    continue;
                }
                s.identifier_bytes += value.len();
                if s.identifier_bytes > self.spec.max_identifier_bytes {
                    return Err(Error::Spec(format!(
                        "the identifier columns hold more than max_identifier_bytes ({}) of distinct values; raise it or split the dataset",
                        self.spec.max_identifier_bytes
                    )));
                }
                s.identifiers.insert(value);
            }
        }
        Ok(())
    }

    fn survey_csv<R: Read>(&self, input: R, label: &str, s: &mut Survey) -> Result<()> {
        let mut r = self.csv_reader(input);
        let Some(header) = self.header(&mut r)? else {
            s.warnings.push(format!("`{label}` is empty"));
            return Ok(());
        };
        self.check_header(&header)?;
        let idx: HashMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        let mut pii = BTreeMap::new();
        let mut rec = csv::StringRecord::new();
        let mut rows = 0u64;
        let mut report = Report::default();
        while self.next_csv(&mut r, &mut rec, &mut report, label)? {
            rows += 1;
            self.tick();
            let get = |n: &str| idx.get(n).map(|&i| rec[i].to_owned());
            self.survey_row(s, &get, &mut pii)?;
        }
        if rows == 0 && report.malformed_rows == 0 {
            s.warnings
                .push(format!("`{label}` has a header and no data rows"));
        }
        s.rows += rows;
        s.malformed += report.malformed_rows;
        s.warnings.append(&mut report.warnings);
        Ok(())
    }

    /// Read the next well-formed CSV record; malformed ones are counted (or
    /// fail the job). `false` at the end of the input.
    fn next_csv<R: Read>(
        &self,
        r: &mut csv::Reader<QuoteCheck<R>>,
        rec: &mut csv::StringRecord,
        report: &mut Report,
        label: &str,
    ) -> Result<bool> {
        loop {
            let line = r.position().line() + 1;
            match r.read_record(rec) {
                Ok(false) => return Ok(false),
                Ok(true) => {}
                Err(e) => {
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(csv_fatal(r, e, line));
                    }
                    report.rows_read += 1;
                    let at = e.position().map_or(line, |p| p.line());
                    self.note_swallowed(r, report, label, at);
                    self.malformed(report, at, e.to_string())?;
                    continue;
                }
            }
            if let Some(open) = r.get_ref().unterminated() {
                report.rows_read += 1;
                self.note_swallowed(r, report, label, open);
                self.malformed(
                    report,
                    open,
                    format!(
                        "unterminated quote opened at line {open} runs to the end of the input"
                    ),
                )?;
                continue;
            }
            report.rows_read += 1;
            return Ok(true);
        }
    }

    fn note_swallowed<R: Read>(
        &self,
        r: &csv::Reader<QuoteCheck<R>>,
        report: &mut Report,
        label: &str,
        line: u64,
    ) {
        if let Some(open) = r.get_ref().unterminated() {
            report.warnings.push(format!(
                "`{label}`: an unterminated quote at line {open} makes everything from line {line} to the end ({} lines) one malformed record",
                r.get_ref().lines().saturating_sub(line) + 1
            ));
        }
    }

    fn survey_jsonl<R: Read>(&self, input: R, label: &str, s: &mut Survey) -> Result<()> {
        let listed = self.spec.listed_columns();
        let mut pii = BTreeMap::new();
        let mut report = Report::default();
        let mut rows = 0u64;
        let mut lines = JsonLines::new(input, self.spec.max_record_bytes);
        while let Some(mut v) = self.next_json(&mut lines, &mut report)? {
            rows += 1;
            self.tick();
            if let Value::Object(m) = &mut v {
                classify(m, "", &listed, false, &mut s.seen, &mut s.unlisted);
            }
            if s.unlisted.len() >= MAX_PATHS {
                return Err(Error::Spec(format!(
                    "the input has more than {MAX_PATHS} distinct fields the spec does not name"
                )));
            }
            let get = |p: &str| get_path(&v, p).and_then(scalar);
            self.survey_row(s, &get, &mut pii)?;
        }
        if rows == 0 && report.malformed_rows == 0 {
            s.warnings.push(format!("`{label}` has no records"));
        }
        s.rows += rows;
        s.malformed += report.malformed_rows;
        Ok(())
    }

    /// The next JSON object of the input; malformed lines are counted (or
    /// fail the job). `None` at the end.
    fn next_json<R: Read>(
        &self,
        lines: &mut JsonLines<R>,
        report: &mut Report,
    ) -> Result<Option<Value>> {
        loop {
            let Some((lineno, line)) = lines.next().map_err(io)? else {
                return Ok(None);
            };
            let text = match line {
                Line::TooLong => {
                    report.rows_read += 1;
                    self.malformed(
                        report,
                        lineno,
                        format!(
                            "record longer than max_record_bytes ({})",
                            self.spec.max_record_bytes
                        ),
                    )?;
                    continue;
                }
                Line::Bytes(b) => b,
            };
            let text = match std::str::from_utf8(text) {
                Ok(t) => t,
                Err(e) => {
                    report.rows_read += 1;
                    self.malformed(report, lineno, format!("not UTF-8: {e}"))?;
                    continue;
                }
            };
            let text = if lineno == 1 {
                text.strip_prefix('\u{feff}').unwrap_or(text)
            } else {
                text
            };
            if text.trim().is_empty() {
                continue;
            }
            report.rows_read += 1;
            match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => return Ok(Some(v)),
                Ok(_) => self.malformed(report, lineno, "not a JSON object".into())?,
                Err(e) => self.malformed(report, lineno, e.to_string())?,
            }
        }
    }

    /// Decide, from the survey of the whole dataset, whether the job may
    /// write anything: every spec field must exist, no unnamed field may
    /// pass (`unlisted = "refuse"`), and k-anonymity / l-diversity must hold
    /// within the suppression cap. Fails closed, naming what is wrong.
    pub fn prepare(&self, s: Survey) -> Result<Prepared> {
        let mut dataset = Report {
            warnings: s.warnings,
            ..Report::default()
        };
        if self.spec.format == Format::Jsonl && s.rows > 0 {
            let missing: Vec<&str> = self
                .spec
                .referenced_columns()
                .into_iter()
                .filter(|c| !s.seen.contains(*c))
                .collect();
            if !missing.is_empty() {
                return Err(Error::Spec(format!(
                    "field(s) {} are in no record of the input",
                    missing.join(", ")
                )));
            }
            match self.spec.unlisted {
                Unlisted::Refuse if !s.unlisted.is_empty() => {
                    let names: Vec<&str> = s.unlisted.iter().map(String::as_str).collect();
                    return Err(Error::Spec(format!(
                        "the spec does not say what to do with field(s) {}: give each a transform, list it in `keep`, or set unlisted = \"drop\"",
                        names.join(", ")
                    )));
                }
                Unlisted::Drop => dataset.unlisted_dropped = s.unlisted.into_iter().collect(),
                Unlisted::Refuse => {}
            }
        }
        let classes = match (&self.spec.kanon, s.classes) {
            (Some(k), Some(c)) => {
                let before = c.stats(k.k_min, |_| true);
                let after = c.stats(k.k_min, |key| c.keeps(key, k.k_min, k.l_min));
                let suppressed = before.rows - after.rows;
                let share = if before.rows == 0 {
                    0.0
                } else {
                    suppressed as f64 / before.rows as f64
                };
                dataset.k_before = Some(before.k);
                dataset.k_after = Some(after.k);
                dataset.l_before = before.l;
                dataset.l_after = after.l;
                dataset.classes_before = Some(before.classes);
                dataset.classes_after = Some(after.classes);
                dataset.suppressed_share = Some(share);
                dataset.risk_before = Some(before.risk);
                dataset.risk_after = Some(after.risk);
                if share > k.max_suppression {
                    return Err(Error::Privacy(format!(
                        "meeting k = {}{} would suppress {suppressed} of {} rows ({:.1}%), more than max_suppression ({:.1}%); the input has k = {}{} in {} classes: generalize the quasi-identifiers further",
                        k.k_min,
                        k.l_min.map(|l| format!(" and l = {l}")).unwrap_or_default(),
                        before.rows,
                        share * 100.0,
                        k.max_suppression * 100.0,
                        before.k,
                        before.l.map(|l| format!(", l = {l}")).unwrap_or_default(),
                        before.classes,
                    )));
                }
                for d in &s.dups {
                    dataset.warnings.extend(d.warning());
                }
                Some(c)
            }
            _ => {
                dataset.warnings.push(
                    "no [kanon] section: the re-identification risk of the output was not measured"
                        .into(),
                );
                None
            }
        };
        dataset.identifier_values = s.identifiers.len() as u64;
        let identifiers = if s.identifiers.is_empty() {
            None
        } else {
            Some(IdMatcher::new(s.identifiers)?)
        };
        Ok(Prepared {
            classes,
            identifiers,
            dataset,
        })
    }

    /// Transform one file of the dataset `prepared` was made for.
    pub fn run<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        prepared: &Prepared,
    ) -> Result<Report> {
        let mut report = Report::default();
        let mut out = Counting {
            inner: output,
            n: 0,
        };
        match self.spec.format {
            Format::Csv => self.run_csv(input, &mut out, prepared, &mut report)?,
            Format::Jsonl => self.run_jsonl(input, &mut out, prepared, &mut report)?,
        }
        out.flush().map_err(io)?;
        report.bytes_written = out.n;
        Ok(report)
    }

    /// The dataset report: the per-file reports added up, with what the
    /// survey found. Fails when the scan finds more than `max_findings`.
    pub fn finish(&self, prepared: &Prepared, files: Vec<Report>) -> Result<Report> {
        let mut total = prepared.dataset.clone();
        total.scanned = self.spec.scan;
        for r in files {
            total.rows_read += r.rows_read;
            total.rows_written += r.rows_written;
            total.rows_suppressed += r.rows_suppressed;
            total.malformed_rows += r.malformed_rows;
            let room = 100usize.saturating_sub(total.malformed_lines.len());
            total
                .malformed_lines
                .extend(r.malformed_lines.into_iter().take(room));
            total.bytes_written += r.bytes_written;
            for (c, m) in r.changed {
                let e = total.changed.entry(c).or_default();
                for (t, n) in m {
                    *e.entry(t).or_default() += n;
                }
            }
            for (k, n) in r.pii_found {
                *total.pii_found.entry(k).or_default() += n;
            }
            for (c, m) in r.scan_findings {
                let e = total.scan_findings.entry(c).or_default();
                for (k, n) in m {
                    *e.entry(k).or_default() += n;
                }
            }
            for c in r.unlisted_dropped {
                if !total.unlisted_dropped.contains(&c) {
                    total.unlisted_dropped.push(c);
                }
            }
            for w in r.warnings {
                if !total.warnings.contains(&w) {
                    total.warnings.push(w);
                }
            }
        }
        if let Some(max) = self.spec.max_findings {
            let found: u64 = total.scan_findings.values().flat_map(|m| m.values()).sum();
            if found > max {
                let cols: Vec<String> = total
                    .scan_findings
                    .iter()
                    .map(|(c, m)| {
                        let kinds: Vec<String> =
                            m.iter().map(|(k, n)| format!("{k} {n}")).collect();
                        format!("{c} ({})", kinds.join(", "))
                    })
                    .collect();
                return Err(Error::Privacy(format!(
                    "the scan still finds {found} PII value(s) in the output, more than max_findings ({max}): {}",
                    cols.join("; ")
                )));
            }
        }
        Ok(total)
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

    /// A JSON path at or under a column the vault rewrote (any transform
    /// but `scrub`): its value is not raw input.
    fn rewritten(&self, path: &str) -> bool {
        self.spec.columns.iter().any(|c| {
            !matches!(c.transform, Transform::Scrub)
                && (path == c.name
                    || (path.len() > c.name.len()
                        && path.starts_with(&c.name)
                        && path.as_bytes()[c.name.len()] == b'.'))
        })
    }

    fn released(&self, prepared: &Prepared, key: &str) -> bool {
        match (&self.spec.kanon, &prepared.classes) {
            (Some(k), Some(c)) => c.keeps(key, k.k_min, k.l_min),
            _ => true,
        }
    }

    fn run_csv<R: Read, W: Write>(
        &self,
        input: R,
        output: W,
        prepared: &Prepared,
        report: &mut Report,
    ) -> Result<()> {
        let mut r = self.csv_reader(input);
        let Some(header) = self.header(&mut r)? else {
            return Ok(());
        };
        self.check_header(&header)?;
        let idx: HashMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), i))
            .collect();
        let listed = self.spec.listed_columns();
        // Per input column: None = verbatim, Some = its transform.
        let mut plan: Vec<Option<(&Transform, Option<usize>)>> = header
            .iter()
            .map(|h| (!listed.contains(&h.as_str())).then_some((&Transform::Drop, None)))
            .collect();
        report.unlisted_dropped = header
            .iter()
            .filter(|h| !listed.contains(&h.as_str()))
            .cloned()
            .collect();
        for c in &self.spec.columns {
            let subject = match &c.transform {
                Transform::DateShift { subject, .. } => idx.get(subject.as_str()).copied(),
                _ => None,
            };
            if let Some(&i) = idx.get(c.name.as_str()) {
                plan[i] = Some((&c.transform, subject));
            }
        }
        let qi: Vec<usize> = self
            .spec
            .kanon
            .iter()
            .flat_map(|k| {
                k.quasi_identifiers
                    .iter()
                    .filter_map(|q| idx.get(q.as_str()).copied())
            })
            .collect();
        let mut w = csv::WriterBuilder::new()
            .delimiter(self.spec.delimiter as u8)
            .from_writer(output);
        let kept: Vec<&str> = header
            .iter()
            .zip(&plan)
            .filter(|(_, p)| !matches!(p, Some((Transform::Drop, _))))
            .map(|(h, _)| h.as_str())
            .collect();
        w.write_record(&kept).map_err(io)?;
        let mut pii = BTreeMap::new();
        let mut rec = csv::StringRecord::new();
        let mut changed = vec![0u64; header.len()];
        while self.next_csv(&mut r, &mut rec, report, "input")? {
            self.tick();
            let mut fields: Vec<Option<Cow<'_, str>>> = Vec::with_capacity(header.len());
            let mut ctx = Ctx {
                key: &self.key,
                scanner: &self.scanner,
                pii: &mut pii,
                identifiers: prepared.identifiers.as_ref(),
            };
            for (i, v) in rec.iter().enumerate() {
                match plan[i] {
                    None => fields.push(Some(Cow::Borrowed(v))),
                    Some((t, subj)) => {
                        let (out, did) = transform::apply(t, v, subj.map(|s| &rec[s]), &mut ctx);
                        if did {
                            changed[i] += 1;
                        }
                        fields.push(out.map(Cow::Owned));
                    }
                }
            }
            if !qi.is_empty() {
                let vals: Vec<&str> = qi
                    .iter()
                    .map(|&i| fields[i].as_deref().unwrap_or(""))
                    .collect();
                if !self.released(prepared, &kanon::key(&vals)) {
                    report.rows_suppressed += 1;
                    continue;
                }
            }
            if self.spec.scan {
                for (i, f) in fields.iter().enumerate() {
                    let Some(f) = f else { continue };
                    if !matches!(plan[i], None | Some((Transform::Scrub, _))) {
                        continue;
                    }
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
            w.write_record(fields.iter().flatten().map(|c| c.as_bytes()))
                .map_err(io)?;
            report.rows_written += 1;
        }
        report.pii_found = pii;
        for (i, n) in changed.iter().enumerate().filter(|(_, n)| **n > 0) {
            if let Some((t, _)) = plan[i] {
                if listed.contains(&header[i].as_str()) {
                    report
                        .changed
                        .entry(header[i].clone())
                        .or_default()
                        .insert(transform::name(t).to_owned(), *n);
                }
            }
        }
        w.flush().map_err(io)?;
        Ok(())
    }

    fn run_jsonl<R: Read, W: Write>(
        &self,
        input: R,
        out: &mut W,
        prepared: &Prepared,
        report: &mut Report,
    ) -> Result<()> {
        let listed = self.spec.listed_columns();
        let drop = self.spec.unlisted == Unlisted::Drop;
        let mut pii = BTreeMap::new();
        let mut lines = JsonLines::new(input, self.spec.max_record_bytes);
        let mut seen = HashSet::new();
        let mut unlisted = BTreeSet::new();
        while let Some(mut v) = self.next_json(&mut lines, report)? {
            self.tick();
            if let Value::Object(m) = &mut v {
                classify(m, "", &listed, drop, &mut seen, &mut unlisted);
            }
            if !drop && !unlisted.is_empty() {
                // The survey saw the same input; this holds the line anyway.
                return Err(Error::Spec(format!(
                    "field(s) the spec does not name: {}",
                    unlisted.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            let original = v.clone();
            let mut ctx = Ctx {
                key: &self.key,
                scanner: &self.scanner,
                pii: &mut pii,
                identifiers: prepared.identifiers.as_ref(),
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
                if changed {
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
                if !self.released(prepared, &kanon::key(&refs)) {
                    report.rows_suppressed += 1;
                    continue;
                }
            }
            if self.spec.scan {
                let mut found = Vec::new();
                leaves(&v, &mut String::new(), &mut found);
                for (path, text) in found {
                    if self.rewritten(&path) {
                        continue;
                    }
                    for f in self.scanner.find(text) {
                        *report
                            .scan_findings
                            .entry(path.clone())
                            .or_default()
                            .entry(f.kind)
                            .or_default() += 1;
                    }
                }
            }
            serde_json::to_writer(&mut *out, &v).map_err(io)?;
            out.write_all(b"\n").map_err(io)?;
            report.rows_written += 1;
        }
        if drop {
            report.unlisted_dropped = unlisted.into_iter().collect();
        }
        report.pii_found = pii;
        Ok(())
    }
}

/// An error of the CSV reader that ends the input: an oversized record or
/// a read failure.
fn csv_fatal<R: Read>(r: &csv::Reader<QuoteCheck<R>>, e: csv::Error, line: u64) -> Error {
    match r.get_ref().oversized() {
        Some(at) => Error::Malformed {
            line: at,
            detail: format!(
                "record longer than max_record_bytes ({}); CSV record boundaries after it cannot be trusted, so the job stops",
                r.get_ref().limit()
            ),
        },
        None => match e.kind() {
            csv::ErrorKind::Io(_) => Error::Io(e.to_string()),
            _ => Error::Malformed {
                line,
                detail: e.to_string(),
            },
        },
    }
}

enum Line<'a> {
    Bytes(&'a [u8]),
    TooLong,
}

/// JSON Lines split on `\n`, each line bounded in memory.
struct JsonLines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
    lineno: u64,
    max: usize,
}

impl<R: Read> JsonLines<R> {
    fn new(input: R, max: usize) -> Self {
        JsonLines {
            reader: BufReader::with_capacity(1 << 16, input),
            buf: Vec::new(),
            lineno: 0,
            max,
        }
    }

    fn next(&mut self) -> std::io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let (n, too_long) = read_line_bounded(&mut self.reader, &mut self.buf, self.max)?;
        if n == 0 {
            return Ok(None);
        }
        self.lineno += 1;
        if too_long {
            return Ok(Some((self.lineno, Line::TooLong)));
        }
        let mut line = &self.buf[..];
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l.strip_suffix(b"\r").unwrap_or(l);
        }
        Ok(Some((self.lineno, Line::Bytes(line))))
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

    /// Survey, prepare and run one input; the output text and report.
    fn run(j: &Job, input: &[u8]) -> Result<(String, Report)> {
        let p = j.prepare_one(input)?;
        let mut out = Vec::new();
        let r = j.run(input, &mut out, &p)?;
        let r = j.finish(&p, vec![r])?;
        Ok((String::from_utf8(out).unwrap(), r))
    }

    #[test]
    fn csv_quotes_newlines_and_delimiters() {
        let j = job("format = \"csv\"\ndelimiter = \";\"\nkeep = [\"id\"]\n[[columns]]\nname = \"notes\"\ntransform = \"scrub\"\n[[columns]]\nname = \"ssn\"\ntransform = \"drop\"\n");
        let input =
            "id;ssn;notes\n1;123-45-6789;\"line one\nmail: a@b.io; ok\"\n2;987-65-4321;plain\n";
        let (text, r) = run(&j, input.as_bytes()).unwrap();
        assert_eq!(
            text,
            "id;notes\n1;\"line one\nmail: [EMAIL]; ok\"\n2;plain\n"
        );
        assert_eq!(r.rows_written, 2);
        assert_eq!(r.changed["ssn"]["drop"], 2);
        assert_eq!(r.pii_found["email"], 1);
    }

    #[test]
    fn k_anonymity_classes_are_bounded_in_memory_whatever_the_input() {
        // Classes of two rows, with long quasi-identifier values: the
        // classes would grow with the input; the bound stops the job.
        let mut input = String::from("qi,s\n");
        for i in 0..20_000 {
            input.push_str(&format!("{:0>200},{i}\n", i / 2));
        }
        let spec = "format = \"csv\"\nkeep = [\"qi\", \"s\"]\nmax_class_bytes = 1000000\n\
                    [kanon]\nquasi_identifiers = [\"qi\"]\nk_min = 2\nsensitive = \"s\"\n";
        let err = run(&job(spec), input.as_bytes()).unwrap_err();
        assert!(
            matches!(&err, Error::Privacy(m) if m.contains("max_class_bytes = 1000000")),
            "{err}"
        );
        // The same data fits the default bound.
        let spec = spec.replace("max_class_bytes = 1000000\n", "");
        let (_, r) = run(&job(&spec), input.as_bytes()).unwrap();
        assert_eq!(r.rows_written, 20_000);
    }

    #[test]
    fn malformed_rows_are_counted_or_fail() {
        let input = "a,b\n1,2\n3\n4,5\n";
        let j = job("format = \"csv\"\nkeep = [\"a\", \"b\"]\n");
        let (_, r) = run(&j, input.as_bytes()).unwrap();
        assert_eq!((r.rows_read, r.rows_written, r.malformed_rows), (3, 2, 1));
        assert_eq!(r.malformed_lines, [3]);
        let j = job("format = \"csv\"\non_error = \"fail\"\nkeep = [\"a\", \"b\"]\n");
        let err = run(&j, input.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err:?}");
    }

    #[test]
    fn an_unterminated_quote_never_releases_what_it_swallowed() {
        // The quote opens in the last column: the csv crate alone would
        // return one record holding every later row, raw.
        let input = "id,notes\n1,fine\n2,\"open\n3,ssn 123-45-6789\n4,ann@example.com\n";
        let j = job("format = \"csv\"\nkeep = [\"id\"]\n[[columns]]\nname = \"notes\"\ntransform = \"redact\"\n");
        let (text, r) = run(&j, input.as_bytes()).unwrap();
        assert_eq!(text, "id,notes\n1,[REDACTED]\n");
        assert_eq!((r.rows_written, r.malformed_rows), (1, 1));
        assert_eq!(r.malformed_lines, [3]);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("unterminated quote at line 3")),
            "{:?}",
            r.warnings
        );
        let j = job("format = \"csv\"\non_error = \"fail\"\nkeep = [\"id\", \"notes\"]\n");
        let err = run(&j, input.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err:?}");
        // In another column the record is ragged: malformed as well.
        let j = job("format = \"csv\"\nkeep = [\"a\", \"b\"]\n");
        let (text, r) = run(&j, "a,b\n1,2\n\"x,3\n4,5\n".as_bytes()).unwrap();
        assert_eq!((text.as_str(), r.malformed_rows), ("a,b\n1,2\n", 1));
    }

    #[test]
    fn records_are_bounded() {
        let big = "x".repeat(300);
        let j = job("format = \"csv\"\nmax_record_bytes = 100\nkeep = [\"a\", \"b\"]\n");
        let err = run(&j, format!("a,b\n1,2\n3,{big}\n5,6\n").as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err:?}");
        let j = job("format = \"jsonl\"\nmax_record_bytes = 100\nkeep = [\"a\"]\n");
        let input = format!("{{\"a\":1}}\n{{\"a\":\"{big}\"}}\n{{\"a\":3}}\n");
        let (text, r) = run(&j, input.as_bytes()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":3}\n");
        assert_eq!(r.malformed_lines, [2]);
    }

    #[test]
    fn duplicate_and_unlisted_csv_columns_are_refused() {
        let j = job("format = \"csv\"\n[[columns]]\nname = \"name\"\ntransform = \"redact\"\n");
        let err = run(&j, "name,id,name\nann,1,ann\n".as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("repeats column names: name"),
            "{err}"
        );
        let err = run(&j, "name,ssn,city\nann,1,x\n".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("ssn, city"), "{err}");
        let j = job("format = \"csv\"\nunlisted = \"drop\"\n[[columns]]\nname = \"name\"\ntransform = \"redact\"\n");
        let (text, r) = run(&j, "name,ssn\nann,123-45-6789\n".as_bytes()).unwrap();
        assert_eq!(text, "name\n[REDACTED]\n");
        assert_eq!(r.unlisted_dropped, ["ssn"]);
        let j = job("format = \"csv\"\n[[columns]]\nname = \"nope\"\ntransform = \"redact\"\n");
        assert!(matches!(run(&j, "a\n1\n".as_bytes()), Err(Error::Spec(_))));
    }

    #[test]
    fn jsonl_fails_closed_on_the_spec() {
        // A typo: the real field would pass through raw.
        let j = job("format = \"jsonl\"\nkeep = [\"n\"]\n[[columns]]\nname = \"user.emial\"\ntransform = \"pseudonymize\"\n");
        let input = "{\"user\":{\"email\":\"a@b.io\"},\"n\":1}\n";
        let err = run(&j, input.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("user.emial") && err.contains("no record"),
            "{err}"
        );
        // A field nobody listed (added upstream) is refused, then dropped on request.
        let spec = "format = \"jsonl\"\nkeep = [\"n\"]\n[[columns]]\nname = \"user.email\"\ntransform = \"pseudonymize\"\n";
        let input = "{\"user\":{\"email\":\"a@b.io\",\"ssn\":\"123-45-6789\"},\"n\":1}\n{\"n\":2,\"extra\":[1]}\n";
        let err = run(&job(spec), input.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("extra, user.ssn"), "{err}");
        let (text, r) = run(
            &job(&format!("unlisted = \"drop\"\n{spec}")),
            input.as_bytes(),
        )
        .unwrap();
        assert!(
            !text.contains("6789") && !text.contains("extra") && text.contains("\"p_"),
            "{text}"
        );
        assert_eq!(r.unlisted_dropped, ["extra", "user.ssn"]);
        // A kept object with a transformed field inside it: both exist.
        let nested = "format = \"jsonl\"\nkeep = [\"n\", \"user\"]\n[[columns]]\nname = \"user.email\"\ntransform = \"pseudonymize\"\n";
        let line = "{\"user\":{\"email\":\"a@b.io\",\"x\":1},\"n\":1}\n";
        let (kept, _) = run(&job(nested), line.as_bytes()).unwrap();
        assert!(
            !kept.contains("a@b.io") && kept.contains("\"x\":1"),
            "{kept}"
        );
    }

    #[test]
    fn jsonl_bad_lines_are_skipped_alone() {
        let j = job("format = \"jsonl\"\n[[columns]]\nname = \"t\"\ntransform = \"scrub\"\n");
        let mut input = b"{\"t\":\"a\"}\n{\"t\":\"\xff\xfe\"}\nnot json\n[1]\n".to_vec();
        input.extend_from_slice(b"{\"t\":\"mail ann@example.com\"}\n");
        let (text, r) = run(&j, &input).unwrap();
        assert_eq!(text, "{\"t\":\"a\"}\n{\"t\":\"mail [EMAIL]\"}\n");
        assert_eq!(r.malformed_lines, [2, 3, 4]);
        let j = job("format = \"jsonl\"\non_error = \"fail\"\n[[columns]]\nname = \"t\"\ntransform = \"scrub\"\n");
        let err = run(&j, &input).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 2, .. }), "{err:?}");
    }

    #[test]
    fn empty_inputs_are_reported() {
        let j = job("format = \"csv\"\nkeep = [\"a\"]\n");
        let (_, r) = run(&j, b"").unwrap();
        assert!(
            r.warnings.iter().any(|w| w.contains("is empty")),
            "{:?}",
            r.warnings
        );
        let (_, r) = run(&j, b"a\n").unwrap();
        assert!(
            r.warnings.iter().any(|w| w.contains("header and no data")),
            "{:?}",
            r.warnings
        );
        let j = job("format = \"jsonl\"\nkeep = [\"a\"]\n");
        let (_, r) = run(&j, b"\n").unwrap();
        assert!(
            r.warnings.iter().any(|w| w.contains("no records")),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn the_scan_covers_jsonl_and_can_fail_the_job() {
        let spec = "format = \"jsonl\"\nscan = true\nkeep = [\"a\", \"b.c\"]\n";
        let input = "{\"a\":\"fine\",\"b\":{\"c\":\"from 192.168.0.1\"}}\n";
        let (_, r) = run(&job(spec), input.as_bytes()).unwrap();
        assert_eq!(r.scan_findings["b.c"]["ipv4"], 1);
        let err = run(&job(&format!("{spec}max_findings = 0\n")), input.as_bytes()).unwrap_err();
        assert!(
            matches!(err, Error::Privacy(_)) && err.to_string().contains("b.c (ipv4 1)"),
            "{err}"
        );
        let j = job("format = \"csv\"\nscan = true\nkeep = [\"b\"]\n[[columns]]\nname = \"a\"\ntransform = \"scrub\"\n");
        let (_, r) = run(&j, "a,b\nmail x@y.io,call 192.168.0.1\n".as_bytes()).unwrap();
        assert!(!r.scan_findings.contains_key("a"));
        assert_eq!(r.scan_findings["b"]["ipv4"], 1);
    }

    #[test]
    fn identifier_values_leave_the_free_text() {
        let j = job("format = \"csv\"\n[[columns]]\nname = \"name\"\nidentifier = true\ntransform = \"pseudonymize\"\n[[columns]]\nname = \"notes\"\ntransform = \"scrub\"\n");
        let input = "name,notes\nZorblat Quux,zorblat  QUUX said hi; Quux again\nAnn Other,met Zorblat Quux\n";
        let (text, r) = run(&j, input.as_bytes()).unwrap();
        assert!(
            !text.to_lowercase().contains("zorblat") && !text.contains("Quux"),
            "{text}"
        );
        assert!(r.identifier_values >= 3, "{r:?}");
        assert!(r.pii_found["identifier"] >= 3, "{r:?}");
    }

    const KSPEC: &str = "format = \"csv\"\nkeep = [\"code\"]\n[[columns]]\nname = \"age\"\ntransform = \"generalize\"\nkind = \"bucket\"\nwidth = 10\n";

    #[test]
    fn k_and_l_are_enforced_with_a_suppression_cap() {
        let spec = format!("{KSPEC}[kanon]\nquasi_identifiers = [\"age\", \"zip\"]\nk_min = 2\nsensitive = \"dx\"\nmax_suppression = 0.5\n");
        let input = "age,zip,dx,code\n31,100,a,1\n35,100,b,2\n38,100,a,3\n52,200,c,4\n";
        let j = job(&spec);
        let (text, r) = run(&j, input.as_bytes()).unwrap();
        assert_eq!((r.k_before, r.k_after), (Some(1), Some(3)));
        assert_eq!((r.l_before, r.l_after), (Some(1), Some(2)));
        assert_eq!((r.classes_before, r.classes_after), (Some(2), Some(1)));
        assert_eq!(r.rows_suppressed, 1);
        assert_eq!(r.suppressed_share, Some(0.25));
        let risk = r.risk_before.unwrap();
        assert_eq!((risk.records_below_k, risk.highest), (0.25, 1.0));
        assert_eq!(r.risk_after.unwrap().highest, 1.0 / 3.0);
        assert_eq!(
            text,
            "age,zip,dx,code\n30-40,100,a,1\n30-40,100,b,2\n30-40,100,a,3\n"
        );
        // l = 3 cannot be met without suppressing everything: the job fails.
        let err = run(&job(&format!("{spec}l_min = 3\n")), input.as_bytes()).unwrap_err();
        assert!(
            matches!(err, Error::Privacy(_)) && err.to_string().contains("would suppress 4 of 4"),
            "{err}"
        );
        // The default cap is 10%: one row in four is too many.
        let spec = format!("{KSPEC}[kanon]\nquasi_identifiers = [\"age\", \"zip\"]\nk_min = 2\nsensitive = \"dx\"\n");
        let err = run(&job(&spec), input.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("max_suppression (10.0%)"), "{err}");
    }

    #[test]
    fn k_is_counted_over_every_file() {
        let spec = format!(
            "{KSPEC}[kanon]\nquasi_identifiers = [\"age\"]\nk_min = 2\nsensitive = \"dx\"\n"
        );
        let j = job(&spec);
        let a = "age,dx,code\n31,a,1\n";
        let b = "age,dx,code\n35,b,2\n";
        let mut s = j.survey_start();
        j.survey(a.as_bytes(), "a.csv", &mut s).unwrap();
        j.survey(b.as_bytes(), "b.csv", &mut s).unwrap();
        let p = j.prepare(s).unwrap();
        let mut reports = Vec::new();
        let mut out = String::new();
        for f in [a, b] {
            let mut o = Vec::new();
            reports.push(j.run(f.as_bytes(), &mut o, &p).unwrap());
            out.push_str(&String::from_utf8(o).unwrap());
        }
        let r = j.finish(&p, reports).unwrap();
        // Per file each row would be a class of one and be suppressed.
        assert_eq!(
            (r.rows_written, r.k_after, r.classes_after, r.l_after),
            (2, Some(2), Some(1), Some(2))
        );
        assert!(
            out.contains("30-40,a,1") && out.contains("30-40,b,2"),
            "{out}"
        );
    }

    #[test]
    fn a_column_that_undoes_a_generalization_is_warned_about() {
        let spec = format!(
            "{KSPEC}[kanon]\nquasi_identifiers = [\"age\"]\nk_min = 2\nmax_suppression = 1.0\n"
        );
        let mut input = String::from("age,code\n");
        for i in 0..40 {
            input.push_str(&format!("{},{}\n", 30 + i % 8, 100 + i % 8));
        }
        let (_, r) = run(&job(&spec), input.as_bytes()).unwrap();
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("`code` maps one-to-one") && w.contains("`age`")),
            "{:?}",
            r.warnings
        );
        assert!(!r.warnings.iter().any(|w| w.contains("not measured")));
    }
}
