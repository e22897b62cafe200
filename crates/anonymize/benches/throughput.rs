//! Anonymization throughput on a generated 100,000-row customer CSV (fixed
//! seed), for a column-only spec and for a spec that scrubs free text.
//! `cargo bench -p vault-anonymize --bench throughput`

use std::time::Instant;

use vault_anonymize::synth::generate;
use vault_anonymize::{Job, Spec};

const COLUMNS: &str = r#"
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
width = 10
[[columns]]
name = "postcode"
transform = "generalize"
kind = "prefix"
keep = 2
[[columns]]
name = "visit_date"
transform = "date_shift"
subject = "customer_id"
"#;

fn main() {
    let data = generate(100_000, 2026);
    let mb = data.len() as f64 / 1e6;
    println!(
        "anonymization throughput, 100,000 rows, {mb:.1} MB CSV (seed 2026), one core, best of 3"
    );
    // Baseline in the same run: parsing and re-writing the CSV untouched.
    for (label, spec) in [
        (
            "parse + write only (baseline)",
            "format = \"csv\"\n".to_owned(),
        ),
        ("column transforms", COLUMNS.to_owned()),
        (
            "column transforms + scrub(notes)",
            format!("{COLUMNS}[[columns]]\nname = \"notes\"\ntransform = \"scrub\"\n"),
        ),
    ] {
        let job = Job::new(Spec::parse(&spec).expect("spec"), [9; 32]).expect("job");
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let mut out = Vec::with_capacity(data.len());
            job.run(data.as_bytes(), &mut out, None).expect("run");
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "  {label:<34} {:>9.0} rows/s {:>7.1} MB/s",
            100_000.0 / best,
            mb / best
        );
    }
}
