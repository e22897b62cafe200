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
