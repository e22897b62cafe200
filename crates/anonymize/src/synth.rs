//! Synthetic customer data with planted PII, for benchmarks and leak tests
//! (deterministic for a seed). Not part of the stable API.

/// xorshift64.
pub struct Rng(pub u64);
impl Rng {
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A random element.
    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

/// A Luhn-valid card number of `len` digits.
pub fn luhn_card(rng: &mut Rng, len: usize) -> String {
    let mut d: Vec<u32> = (0..len - 1).map(|_| (rng.next_u64() % 10) as u32).collect();
    d[0] = 4;
    let mut sum = 0;
    for (i, v) in d.iter().rev().enumerate() {
        let mut x = *v;
        if i % 2 == 0 {
            x *= 2;
            if x > 9 {
                x -= 9;
            }
        }
        sum += x;
    }
    d.push((10 - sum % 10) % 10);
    d.iter()
        .map(|x| char::from_digit(*x, 10).unwrap_or('0'))
        .collect()
}

/// `rows` customer records with a free-text note (the benchmark shape).
pub fn generate(rows: usize, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let first = [
        "Ann", "Bob", "Chloé", "Dmitri", "Eve", "Farah", "Gus", "Hana",
    ];
    let last = [
        "Lee", "Smith", "Nguyen", "Okafor", "Müller", "Rossi", "Kim", "Silva",
    ];
    let cities = [
        "London", "Paris", "Berlin", "Lagos", "Seoul", "Austin", "Lima", "Oslo",
    ];
    let mut out = String::from("customer_id,name,email,ssn,phone,birth_date,age,gender,postcode,city,visit_date,diagnosis,notes\n");
    for i in 0..rows {
        let f = rng.pick(&first);
        let l = rng.pick(&last);
        let age = 18 + rng.next_u64() % 70;
        let ssn = format!(
            "{:03}-{:02}-{:04}",
            100 + rng.next_u64() % 600,
            1 + rng.next_u64() % 98,
            1 + rng.next_u64() % 9998
        );
        let phone = format!(
            "+44 20 {:04} {:04}",
            rng.next_u64() % 10000,
            rng.next_u64() % 10000
        );
        let card = luhn_card(&mut rng, if i % 5 == 0 { 19 } else { 16 });
        let note = match i % 4 {
            0 => format!("Customer called from {phone}, asked to update card {card}."),
            1 => format!(
                "Email from {}.{}@example.com about the invoice; IP 10.{}.{}.{}",
                f.to_lowercase(),
                l.to_lowercase(),
                rng.next_u64() % 256,
                rng.next_u64() % 256,
                rng.next_u64() % 256
            ),
            2 => format!("Verified SSN {ssn} in branch; order 1234567812345678 shipped."),
            _ => "Prefers contact by post. No issues reported this quarter.".to_owned(),
        };
        out.push_str(&format!(
            "{i},{f} {l},{}.{}{}@example.com,{ssn},{phone},{}-{:02}-{:02},{age},{},{}{} {}{},{},2024-{:02}-{:02},{},\"{note}\"\n",
            f.to_lowercase(), l.to_lowercase(), i,
            1940 + rng.next_u64() % 60, 1 + rng.next_u64() % 12, 1 + rng.next_u64() % 28,
            rng.pick(&["F", "M", "X"]),
            rng.pick(&["SW", "N", "E", "W"]), 1 + rng.next_u64() % 20, 1 + rng.next_u64() % 9, rng.pick(&["AA", "BD", "QX"]),
            rng.pick(&cities), 1 + rng.next_u64() % 12, 1 + rng.next_u64() % 28,
            rng.pick(&["flu", "asthma", "none", "diabetes"]),
        ));
    }
    out
}

/// One identifier planted in a generated note: its kind and the exact text.
#[derive(Clone, Debug)]
pub struct Planted {
    /// Row (0-based).
    pub row: usize,
    /// `name`, `address` (both also in the row's identifier columns),
    /// `other-name`, `other-address` (people and places only the note
    /// mentions), `uncued-name`, `uncued-address` (the same, outside the
    /// name lists and address patterns, with no cue), `phone`, `email`, `card`, `iban`, `ssn`, `ipv4`, `ipv6`,
    /// `dob`.
    pub kind: &'static str,
    /// The text as written in the note.
    pub value: String,
}

const FIRST: [&str; 24] = [
    "Ann",
    "Oluwaseun",
    "Chloé",
    "Dmitri",
    "Priya",
    "Farah",
    "José",
    "Hana",
    "Wei",
    "Zeynep",
    "Kwame",
    "Siobhan",
    "Aroha",
    "Mateo",
    "Ingrid",
    "Tomasz",
    "Amara",
    "Yusuf",
    "Lucía",
    "Kenji",
    "Margaret",
    "Robert",
    "Fatima",
    "Lars",
];
const LAST: [&str; 24] = [
    "Lee",
    "Okafor",
    "Müller",
    "Nguyen",
    "Rossi",
    "Kovač",
    "Yılmaz",
    "Tanaka",
    "O'Brien",
    "García",
    "Silva",
    "Kowalski",
    "Haddad",
    "Mensah",
    "Johansson",
    "Papadopoulos",
    "Singh",
    "Dubois",
    "Ivanova",
    "Fernández",
    "Abernathy",
    "Whitfield",
    "Castellanos",
    "Brennan",
];
const STREETS: [&str; 12] = [
    "Baker",
    "Elm",
    "Harbour View",
    "Kingsley",
    "Maple",
    "Old Mill",
    "Queen",
    "Riverside",
    "Station",
    "Victoria",
    "Willow",
    "Church",
];
const SUFFIXES: [&str; 8] = [
    "Street", "Road", "Avenue", "Lane", "Drive", "Close", "Way", "Terrace",
];
const CITIES: [&str; 8] = [
    "London",
    "Leeds",
    "Bristol",
    "Manchester",
    "Glasgow",
    "Cardiff",
    "York",
    "Bath",
];

fn digit_string(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + (rng.next_u64() % 10) as u8))
        .collect()
}

fn full_width(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '0'..='9' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
            _ => c,
        })
        .collect()
}

fn iban(rng: &mut Rng) -> String {
    // DE: 18 digits of BBAN; check digits by ISO 13616.
    let bban = digit_string(rng, 18);
    let numeric = format!("{bban}131400");
    let rem = numeric
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    format!("DE{:02}{bban}", 98 - rem)
}

fn group(s: &str, n: usize, sep: &str) -> String {
    s.as_bytes()
        .chunks(n)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(sep)
}

/// `rows` people with realistic free-text notes that mention them, other
/// people and every identifier format with its variants; returns the CSV
/// and what each note holds. Columns: `id,name,email,phone,address,
/// birth_date,age,gender,postcode,diagnosis,notes`.
pub fn people(rows: usize, seed: u64) -> (String, Vec<Planted>) {
    let mut rng = Rng(seed | 1);
    let mut planted = Vec::new();
    let mut out = String::from(
        "id,name,email,phone,address,birth_date,age,gender,postcode,diagnosis,notes\n",
    );
    for i in 0..rows {
        let first = rng.pick(&FIRST);
        let last = rng.pick(&LAST);
        let name = format!("{first} {last}");
        let postcode = format!(
            "{}{} {}{}",
            rng.pick(&["SW", "N", "E", "LS", "BS", "M"]),
            1 + rng.next_u64() % 20,
            1 + rng.next_u64() % 9,
            rng.pick(&["AA", "BD", "QX", "HT"])
        );
        let address = format!(
            "{} {} {}, {} {postcode}",
            1 + rng.next_u64() % 300,
            rng.pick(&STREETS),
            rng.pick(&SUFFIXES),
            rng.pick(&CITIES)
        );
        let email_local = format!("{}.{}{}", first.to_lowercase(), last.to_lowercase(), i);
        let email = format!("{email_local}@example.com");
        let local = digit_string(&mut rng, 8);
        let phone = format!("+44 20 {} {}", &local[..4], &local[4..]);
        let (y, m, d) = (
            1940 + rng.next_u64() % 60,
            1 + rng.next_u64() % 12,
            1 + rng.next_u64() % 28,
        );
        let mut notes: Vec<String> = Vec::new();
        let mut plant =
            |kind: &'static str, value: String, notes: &mut Vec<String>, text: String| {
                planted.push(Planted {
                    row: i,
                    kind,
                    value,
                });
                notes.push(text);
            };
        // The person, as the notes write them.
        match rng.next_u64() % 5 {
            0 => plant(
                "name",
                name.clone(),
                &mut notes,
                format!("{name} called about the bill."),
            ),
            1 => plant(
                "name",
                last.to_owned(),
                &mut notes,
                format!("Spoke with Mx {last} today."),
            ),
            2 => plant(
                "name",
                name.to_uppercase(),
                &mut notes,
                format!("Patient {} seen.", name.to_uppercase()),
            ),
            3 => plant(
                "name",
                first.to_owned(),
                &mut notes,
                format!("{first} prefers mornings."),
            ),
            _ => plant(
                "name",
                name.replace(' ', "  "),
                &mut notes,
                format!("Letter to {} sent.", name.replace(' ', "  ")),
            ),
        }
        if rng.next_u64().is_multiple_of(3) {
            let street = address.split(',').next().unwrap_or("").to_owned();
            plant(
                "address",
                street.clone(),
                &mut notes,
                format!("Moved to {street} last year."),
            );
        }
        // Someone only the note names.
        if rng.next_u64().is_multiple_of(2) {
            let other = format!(
                "{} {}",
                rng.pick(&["Margaret", "Robert", "Fatima", "Lars", "Amara", "Kenji"]),
                rng.pick(&[
                    "Whitfield",
                    "Abernathy",
                    "Castellanos",
                    "Brennan",
                    "Okonkwo",
                    "Lindqvist"
                ])
            );
            let text = match rng.next_u64() % 3 {
                0 => format!("Referred by Dr. {other}."),
                1 => format!("Her daughter {other} will call."),
                _ => format!("{other} is the emergency contact."),
            };
            plant("other-name", other, &mut notes, text);
        }
        // Names outside the lists, with no cue: the detectors' known limit.
        if rng.next_u64().is_multiple_of(4) {
            let other = format!(
                "{} {}",
                rng.pick(&["Chidi", "Ngozi", "Bjørn", "Aiyana", "Tariq", "Oyelaran"]),
                rng.pick(&[
                    "Anagonye",
                    "Eze",
                    "Halvorsen",
                    "Redcloud",
                    "Haddadin",
                    "Adeyemi"
                ])
            );
            plant(
                "uncued-name",
                other.clone(),
                &mut notes,
                format!("{other} will bring the forms."),
            );
        }
        if rng.next_u64().is_multiple_of(4) {
            let a = format!(
                "Flat {}, {} House",
                1 + rng.next_u64() % 40,
                rng.pick(&["Maltings", "Ashgrove", "Kestrel", "Tannery"])
            );
            plant(
                "uncued-address",
                a.clone(),
                &mut notes,
                format!("Now at {a}."),
            );
        }
        if rng.next_u64().is_multiple_of(3) {
            let a = format!(
                "{} {} {}",
                1 + rng.next_u64() % 90,
                rng.pick(&["Acacia", "Beacon", "Cedar", "Dover"]),
                rng.pick(&SUFFIXES)
            );
            plant(
                "other-address",
                a.clone(),
                &mut notes,
                format!("Parcel left at {a}."),
            );
        }
        // Every identifier format, with its variants.
        let p = digit_string(&mut rng, 7);
        let (a3, b3, c4) = (
            &p[..3],
            &p[3..6],
            format!("{}{}", &p[6..], digit_string(&mut rng, 3)),
        );
        let phone_text = match rng.next_u64() % 9 {
            0 => phone.clone(),
            1 => format!("({a3}) {b3}-{c4}"),
            2 => format!("{a3}/{b3}/{c4}"),
            3 => format!("{a3}_{b3}_{c4}"),
            4 => format!("{a3}\u{2013}{b3}\u{2013}{c4}"),
            5 => format!("{a3}-{b3}-{c4} x{}", 10 + rng.next_u64() % 900),
            6 => full_width(&format!("{a3}-{b3}-{c4}")),
            7 => format!("+1 {a3} {b3} {c4}"),
            _ => format!("{a3}.{b3}.{c4}"),
        };
        plant(
            "phone",
            phone_text.clone(),
            &mut notes,
            format!("Call back on {phone_text}."),
        );
        let email_text = match rng.next_u64() % 3 {
            0 => email.clone(),
            1 => format!("{}@beispiel-straße.de", email_local.replace('e', "é")),
            _ => format!("{}@Example.COM", email_local.to_uppercase()),
        };
        plant(
            "email",
            email_text.clone(),
            &mut notes,
            format!("Wrote from {email_text}."),
        );
        let card = luhn_card(&mut rng, 16);
        let cvv = 100 + rng.next_u64() % 900;
        let (card_text, card_value) = match rng.next_u64() % 4 {
            0 => (group(&card, 4, " "), group(&card, 4, " ")),
            1 => (group(&card, 4, "."), group(&card, 4, ".")),
            2 => (format!("{card} cvv {cvv}"), card.clone()),
            _ => (
                format!("{} {cvv}", group(&card, 4, " ")),
                group(&card, 4, " "),
            ),
        };
        plant(
            "card",
            card_value,
            &mut notes,
            format!("Paid with {card_text}."),
        );
        let ib = iban(&mut rng);
        let iban_text = match rng.next_u64() % 3 {
            0 => group(&ib, 4, " "),
            1 => group(&ib, 4, "-"),
            _ => ib.clone(),
        };
        plant(
            "iban",
            iban_text.clone(),
            &mut notes,
            format!("Refund to {iban_text} please."),
        );
        let ssn = format!(
            "{:03}-{:02}-{:04}",
            100 + rng.next_u64() % 600,
            1 + rng.next_u64() % 98,
            1 + rng.next_u64() % 9998
        );
        plant(
            "ssn",
            ssn.clone(),
            &mut notes,
            format!("SSN {ssn} on file."),
        );
        let ip = match rng.next_u64() % 5 {
            0 => (
                "ipv4",
                format!(
                    "10.{}.{}.{}",
                    rng.next_u64() % 256,
                    rng.next_u64() % 256,
                    1 + rng.next_u64() % 254
                ),
            ),
            1 => (
                "ipv6",
                format!(
                    "2001:db8::{:x}:{:x}",
                    rng.next_u64() % 65536,
                    1 + rng.next_u64() % 65535
                ),
            ),
            2 => (
                "ipv6",
                format!(
                    "fe80::{:x}:{:x}%eth0",
                    rng.next_u64() % 65536,
                    1 + rng.next_u64() % 65535
                ),
            ),
            3 => (
                "ipv6",
                format!("::ffff:192.0.2.{}", 1 + rng.next_u64() % 254),
            ),
            _ => (
                "ipv6",
                format!(
                    "2001:DB8:0:0:8:800:{:X}:{:X}",
                    rng.next_u64() % 65536,
                    1 + rng.next_u64() % 65535
                ),
            ),
        };
        plant(
            ip.0,
            ip.1.clone(),
            &mut notes,
            format!("Logged in from {}.", ip.1),
        );
        let months = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        let dob = match rng.next_u64() % 5 {
            0 => format!("{d:02}/{m:02}/{y}"),
            1 => format!("{m}/{d}/{y}"),
            2 => format!("{d}.{m}.{y}"),
            3 => format!("{} {d}, {y}", months[(m - 1) as usize]),
            _ => format!("{d} {} {y}", months[(m - 1) as usize]),
        };
        plant("dob", dob.clone(), &mut notes, format!("Born {dob}."));
        // A stable order, shuffled per row.
        let k = (rng.next_u64() % notes.len() as u64) as usize;
        notes.rotate_left(k);
        let note = notes.join(" ").replace('"', "\"\"");
        out.push_str(&format!(
            "{i},{name},{email},{phone},\"{address}\",{y}-{m:02}-{d:02},{},{},{postcode},{},\"{note}\"\n",
            18 + rng.next_u64() % 70,
            rng.pick(&["F", "M", "X"]),
            rng.pick(&["flu", "asthma", "none", "diabetes", "migraine"]),
        ));
    }
    (out, planted)
}

/// The column transforms of [`customers_spec`], one per kind of transform
/// (without its scrub of `notes` and its privacy goals): what the
/// throughput benchmark's "column transforms" case runs.
pub const CUSTOMER_COLUMNS: &str = r#"
format = "csv"
keep = ["customer_id", "city"]
[[columns]]
name = "name"
identifier = true
transform = "redact"
[[columns]]
name = "birth_date"
transform = "generalize"
kind = "year"
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
name = "visit_date"
transform = "date_shift"
subject = "customer_id"
"#;

/// The spec a data steward would write for [`generate`]'s customers: every
/// column classified, the notes scrubbed, what is released raw scanned,
/// k-anonymity 5 over age, postcode and gender. The one fixture the leak tests, the end-to-end job tests and
/// the benchmark share.
pub fn customers_spec() -> String {
    format!(
        "scan = true\n{CUSTOMER_COLUMNS}[[columns]]
name = \"notes\"
transform = \"scrub\"
[kanon]
quasi_identifiers = [\"age\", \"postcode\", \"gender\"]
k_min = 5
sensitive = \"diagnosis\"
"
    )
}

/// The spec a data steward would write for `synth::people`.
pub const PEOPLE_SPEC: &str = r#"
format = "csv"
[[columns]]
name = "id"
transform = "pseudonymize"
[[columns]]
name = "name"
identifier = true
transform = "pseudonymize"
[[columns]]
name = "email"
identifier = true
transform = "pseudonymize"
[[columns]]
name = "phone"
identifier = true
transform = "redact"
[[columns]]
name = "address"
identifier = true
transform = "redact"
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
keep = 1
[[columns]]
name = "notes"
transform = "scrub"
[kanon]
quasi_identifiers = ["age", "postcode", "gender"]
k_min = 5
sensitive = "diagnosis"
l_min = 2
"#;
