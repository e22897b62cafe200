//! On generated customer data: no email, SSN, card number (16 and 19
//! digits), IP address or phone number survives verbatim, and the k the
//! report claims is the k of the output, by an independent group-by.

use std::collections::{HashMap, HashSet};

use regex::Regex;
use vault_anonymize::synth::generate;
use vault_anonymize::{Job, Spec};

const SPEC: &str = r#"
format = "csv"
[[columns]]
name = "name"
transform = "redact"
[[columns]]
name = "email"
transform = "pseudonymize"
[[columns]]
name = "ssn"
transform = "drop"
[[columns]]
name = "phone"
transform = "mask"
keep_last = 2
[[columns]]
name = "birth_date"
transform = "generalize"
kind = "year"
[[columns]]
name = "age"
transform = "generalize"
kind = "bucket"
width = 20
[[columns]]
name = "postcode"
transform = "generalize"
kind = "prefix"
keep = 1
[[columns]]
name = "notes"
transform = "scrub"
[kanon]
quasi_identifiers = ["age", "postcode", "gender"]
k_min = 10
sensitive = "diagnosis"
"#;

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

    let job = Job::new(Spec::parse(SPEC).unwrap(), [5; 32]).unwrap();
    let classes = job.classes(data.as_bytes()).unwrap();
    let mut out = Vec::new();
    let report = job.run(data.as_bytes(), &mut out, Some(&classes)).unwrap();
    let text = String::from_utf8(out).unwrap();
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
    assert!(k >= 10);
    assert_eq!(rows, report.rows_written);
    assert_eq!(report.rows_written + report.rows_suppressed, 20_000);
    assert_eq!(Some(groups.len() as u64), report.classes_after);
}
