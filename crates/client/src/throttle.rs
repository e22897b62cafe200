//! A byte-rate limit shared by every transfer of one command
//! (`--limit-rate`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Paces chunks so that, over any stretch of time, no more than the rate
/// goes out on average. Time not used (a transfer waiting on something
/// else) is not saved up for a later burst.
pub struct RateLimit {
    bytes_per_sec: f64,
    next: Mutex<Instant>,
}

impl RateLimit {
    /// A limit of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Self {
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: Mutex::new(Instant::now()),
        }
    }

    /// Wait until a chunk of `n` bytes may go.
    pub async fn take(&self, n: usize) {
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + Duration::from_secs_f64(n as f64 / self.bytes_per_sec);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// Parse a rate such as `500K`, `20M` or `1.5G` (bytes per second; K, M and
/// G are powers of 1024; a plain number is bytes).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("`{s}`: the unit is K, M or G (bytes per second)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a rate like 500K, 20M or 1.5G"))?;
    let bytes = v * mult as f64;
    if !bytes.is_finite() || bytes < 1024.0 {
        return Err(format!(
            "`{s}`: the smallest rate is 1K (1024 bytes per second)"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_binary_units() {
        assert_eq!(parse_rate("1K"), Ok(1024));
        assert_eq!(parse_rate("20m"), Ok(20 << 20));
        assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
        assert_eq!(parse_rate("4096"), Ok(4096));
        for bad in ["", "M", "10X", "-5M", "0", "100", "nanM"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn chunks_are_paced_to_the_rate() {
        let limit = RateLimit::new(1 << 20);
        let t0 = Instant::now();
        for _ in 0..5 {
            limit.take(1 << 19).await;
        }
        // Five half-MiB chunks at 1 MiB/s: the fifth may start at 2 s.
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
    }
}
