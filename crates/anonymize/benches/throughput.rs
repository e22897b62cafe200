//! Anonymization throughput on one core, best of 3, for the writing pass
//! (`Job::run`) and for the survey pass that precedes it (`Job::survey` +
//! `Job::prepare`), beside a parse-and-write baseline from the same run:
//!
//! - the customer CSV (`synth::generate`, 100,000 rows): column transforms,
//!   then column transforms plus `scrub` of the notes with every detector;
//! - the people CSV (`synth::people`, 100,000 rows, notes full of names,
//!   addresses and identifiers): `scrub` with every detector and row-aware
//!   identifier removal from four identifier columns.
//!
//! `cargo bench -p vault-anonymize --bench throughput`

use std::time::Instant;

use vault_anonymize::synth::{generate, people, CUSTOMER_COLUMNS, PEOPLE_SPEC};
use vault_anonymize::{Job, Spec};

fn best_of_3(mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
    }
    best
}

fn bench(data: &str, cases: &[(&str, String)]) {
    let mb = data.len() as f64 / 1e6;
    for (label, spec) in cases {
        let job = Job::new(Spec::parse(spec).expect("spec"), [9; 32]).expect("job");
        let prepared = job.prepare_one(data.as_bytes()).expect("prepare");
        let survey = best_of_3(|| {
            job.prepare_one(data.as_bytes()).expect("prepare");
        });
        let run = best_of_3(|| {
            let mut out = Vec::with_capacity(data.len());
            job.run(data.as_bytes(), &mut out, &prepared).expect("run");
        });
        println!(
            "  {label:<44} write {:>7.1} MB/s {:>8.0} rows/s   survey {:>7.1} MB/s",
            mb / run,
            100_000.0 / run,
            mb / survey
        );
    }
}

fn main() {
    let data = generate(100_000, 2026);
    println!(
        "anonymization throughput, one core, best of 3; customers: 100,000 rows, {:.1} MB CSV (seed 2026)",
        data.len() as f64 / 1e6
    );
    bench(
        &data,
        &[
            (
                "parse + write only (baseline)",
                "format = \"csv\"\nunlisted = \"drop\"\nkeep = [\"customer_id\",\"name\",\"email\",\"ssn\",\"phone\",\"birth_date\",\"age\",\"gender\",\"postcode\",\"city\",\"visit_date\",\"diagnosis\",\"notes\"]\n".to_owned(),
            ),
            (
                "column transforms",
                format!("unlisted = \"drop\"\n{CUSTOMER_COLUMNS}"),
            ),
            (
                "column transforms + scrub(notes), all detectors",
                format!("unlisted = \"drop\"\n{CUSTOMER_COLUMNS}[[columns]]\nname = \"notes\"\ntransform = \"scrub\"\n"),
            ),
        ],
    );
    let (people, _) = people(100_000, 2026);
    println!(
        "people: 100,000 rows, {:.1} MB CSV, notes with names, addresses and identifiers",
        people.len() as f64 / 1e6
    );
    bench(
        &people,
        &[
            (
                "parse + write only (baseline)",
                "format = \"csv\"\nkeep = [\"id\",\"name\",\"email\",\"phone\",\"address\",\"birth_date\",\"age\",\"gender\",\"postcode\",\"diagnosis\",\"notes\"]\n".to_owned(),
            ),
            (
                "scrub(notes) + identifier columns + k, l",
                PEOPLE_SPEC.to_owned(),
            ),
        ],
    );
}
