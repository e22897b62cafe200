//! Leak tests on generated data.
//!
//! 1. Customer records: no email, SSN, card number (16 and 19 digits), IP
//!    address or phone number survives verbatim, and the k the report
//!    claims is the k of the output, by an independent group-by.
//! 2. 100,000 people with realistic notes (`synth::people`): per identifier
//!    type, the share of planted values that leak verbatim. Names and
//!    addresses of the dataset's identifier columns must leak 0%; the other
//!    figures are printed (`--nocapture`) and bounded by what
//!    `docs/anonymization.md` states.

use std::collections::{BTreeMap, HashMap, HashSet};

use regex::Regex;
use vault_anonymize::synth::{customers_spec, generate, people, PEOPLE_SPEC};
use vault_anonymize::{Job, Spec};

fn run(job: &Job, data: &str) -> (String, vault_anonymize::Report) {
    let prepared = job.prepare_one(data.as_bytes()).unwrap();
    let mut out = Vec::new();
    let report = job.run(data.as_bytes(), &mut out, &prepared).unwrap();
    let report = job.finish(&prepared, vec![report]).unwrap();
    (String::from_utf8(out).unwrap(), report)
}

#[test]
fn no_pii_survives_and_the_reported_k_is_the_output_k() {
    let data = generate(20_000, 7);
    // Every planted value, from the raw data.
    let mut planted: HashSet<String> = HashSet::new();
    let mut r = csv::Reader::from_reader(data.as_bytes());
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let col = |n: &str| h.iter().position(|x| x == n).unwrap();
    let (email, ssn, phone, notes) = (col("email"), col("ssn"), col("phone"), col("notes"));
    let card = Regex::new(r"\b4[0-9]{15}(?:[0-9]{3})?\b").unwrap();
    let ip = Regex::new(r"\b10\.[0-9]+\.[0-9]+\.[0-9]+\b").unwrap();
    let mail = Regex::new(r"[a-z]+\.[a-z]+@example\.com").unwrap();
    let ssn_re = Regex::new(r"[0-9]{3}-[0-9]{2}-[0-9]{4}").unwrap();
    let phone_re = Regex::new(r"\+44 20 [0-9]{4} [0-9]{4}").unwrap();
    let mut cards19 = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        planted.insert(rec[email].to_owned());
        planted.insert(rec[ssn].to_owned());
        planted.insert(rec[phone].to_owned());
        for re in [&card, &ip, &mail, &ssn_re, &phone_re] {
            for m in re.find_iter(&rec[notes]) {
                if m.as_str().len() == 19 {
                    cards19 += 1;
                }
                planted.insert(m.as_str().to_owned());
            }
        }
    }
    assert!(cards19 > 100, "the data must include 19-digit cards");
    assert!(planted.len() > 50_000);

    let job = Job::new(Spec::parse(&customers_spec()).unwrap(), [5; 32]).unwrap();
    let (text, report) = run(&job, &data);
    // Look for every PII shape in the output; a match that was planted is a leak.
    let any_mail = Regex::new(r"[a-z0-9.]+@example\.com").unwrap();
    let leaks: Vec<String> = [&card, &ip, &any_mail, &ssn_re, &phone_re]
        .iter()
        .flat_map(|re| {
            re.find_iter(&text)
                .map(|m| m.as_str().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|m| planted.contains(m))
        .take(5)
        .collect();
    assert!(leaks.is_empty(), "verbatim PII in the output: {leaks:?}");
    assert!(
        report.pii_found["card"] > 0
            && report.pii_found["phone"] > 0
            && report.pii_found["ipv4"] > 0
    );
    // The order numbers that fail Luhn are kept.
    assert!(text.contains("1234567812345678"));

    // Independent group-by over the output's quasi-identifiers.
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let qi: Vec<usize> = ["age", "postcode", "gender"]
        .iter()
        .map(|q| h.iter().position(|x| x == q).unwrap())
        .collect();
    let mut groups: HashMap<Vec<String>, u64> = HashMap::new();
    let mut rows = 0;
    for rec in r.records() {
        let rec = rec.unwrap();
        *groups
            .entry(qi.iter().map(|&i| rec[i].to_owned()).collect())
            .or_default() += 1;
        rows += 1;
    }
    let k = groups.values().min().copied().unwrap();
    assert_eq!(Some(k), report.k_after);
    assert!(k >= 5);
    assert_eq!(rows, report.rows_written);
    assert_eq!(report.rows_written + report.rows_suppressed, 20_000);
    assert_eq!(Some(groups.len() as u64), report.classes_after);
}

#[test]
fn leak_shares_per_identifier_type_on_100000_people() {
    let (data, planted) = people(100_000, 2026);
    let job = Job::new(Spec::parse(PEOPLE_SPEC).unwrap(), [8; 32]).unwrap();
    let (text, report) = run(&job, &data);
    // The output notes per input row: rows are written in input order,
    // suppressed ones left out, so map through the pseudonymized id.
    let mut ids = HashMap::new();
    let mut r = csv::Reader::from_reader(data.as_bytes());
    for (i, rec) in r.records().enumerate() {
        ids.insert(rec.unwrap()[0].to_owned(), i);
    }
    let mut notes: HashMap<usize, String> = HashMap::new();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let h: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    let n = h.iter().position(|x| x == "notes").unwrap();
    let id = h.iter().position(|x| x == "id").unwrap();
    let mut row_of = HashMap::new();
    for (raw, i) in &ids {
        row_of.insert(job_pseudonym(&job, raw), *i);
    }
    for rec in r.records() {
        let rec = rec.unwrap();
        notes.insert(row_of[&rec[id]], rec[n].to_owned());
    }
    let mut per: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut examples: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &planted {
        let Some(note) = notes.get(&p.row) else {
            continue;
        };
        let e = per.entry(p.kind).or_default();
        e.0 += 1;
        if contains_word(note, &p.value) {
            e.1 += 1;
            let ex = examples.entry(p.kind).or_default();
            if ex.len() < 3 {
                ex.push(format!("`{}` in `{note}`", p.value));
            }
        }
    }
    println!(
        "leak test: {} rows, {} written, {} suppressed (k_after {:?}, l_after {:?})",
        report.rows_read,
        report.rows_written,
        report.rows_suppressed,
        report.k_after,
        report.l_after
    );
    println!(
        "{:<14} {:>8} {:>7} {:>8}",
        "type", "planted", "leaked", "share"
    );
    for (kind, (total, leaked)) in &per {
        println!(
            "{kind:<14} {total:>8} {leaked:>7} {:>7.3}%",
            *leaked as f64 * 100.0 / *total as f64
        );
    }
    for (kind, ex) in &examples {
        println!("  {kind}: {}", ex.join(" | "));
    }
    assert!(report.rows_written > 90_000, "{report:?}");
    for kind in ["name", "address"] {
        assert_eq!(
            per[kind].1,
            0,
            "{kind} from identifier columns leaked: {:?}",
            examples.get(kind)
        );
    }
    // What docs/anonymization.md states for the detectors alone.
    for (kind, max_share) in [
        ("phone", 0.0),
        ("email", 0.0),
        ("card", 0.0),
        ("iban", 0.0),
        ("ssn", 0.0),
        ("ipv4", 0.0),
        ("ipv6", 0.0),
        ("dob", 0.0),
        ("other-name", 0.0),
        ("other-address", 0.0),
        // Known limits, bounded so that a regression shows.
        ("uncued-name", 0.90),
        ("uncued-address", 1.0),
    ] {
        let (total, leaked) = per[kind];
        assert!(
            leaked as f64 <= max_share * total as f64,
            "{kind}: {leaked} of {total} leaked: {:?}",
            examples.get(kind)
        );
    }
}

/// `needle` in `hay` with no letter or digit right before or after it.
fn contains_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, m)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + m.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

/// The pseudonym the job gives a value (HMAC under the job key), computed
/// by running the job's own transform over a one-row file.
fn job_pseudonym(_job: &Job, raw: &str) -> String {
    static J: std::sync::OnceLock<Job> = std::sync::OnceLock::new();
    let j = J.get_or_init(|| {
        Job::new(
            Spec::parse(
                "format = \"csv\"\n[[columns]]\nname = \"id\"\ntransform = \"pseudonymize\"\n",
            )
            .unwrap(),
            [8; 32],
        )
        .unwrap()
    });
    let input = format!("id\n{raw}\n");
    let (out, _) = run(j, &input);
    out.lines().nth(1).unwrap_or_default().to_owned()
}
