//! Cost of the payload check against the floor measured in the same run: a bare
//! `serde_json::from_str::<T>` of the same text into the same type (no size limit, no
//! rejection report), the least any check with the consumer's serde type must do. Two
//! checks are measured: `PayloadContract::check_str` of the text (a table queue's `TEXT`
//! payload: the same input as the floor; `check_vs_bare`), and `PayloadContract::check` of
//! its bytes (a broker's body, which must be validated as UTF-8 first and the floor's
//! `&str` need not; `check_bytes_vs_bare`). The corpus is generated: order events of about
//! 320 bytes (nested customer and line items, strings, integers, floats, an optional field,
//! an enum), and a share of poison payloads (wrong type deep in the items, unknown variant,
//! missing field, truncated, broken syntax, trailing characters), 0 % by default. No server
//! needed.
//!
//! The three take turns slice by slice (1024 payloads; which goes first rotates every
//! slice), so all meet the same load from whatever else runs on the machine. Each round
//! covers the whole corpus with each; throughput is reported as min / median / max over the
//! rounds, and so is the ratio within a round. "best/slice" sums each slice's best round:
//! the figure least disturbed by other processes on a shared machine.
//!
//! `cargo bench -p contract-sqlx --bench payload -- --n 1000000 --rounds 5 --poison-percent 0`
//! — last stdout line is one JSON object.

use std::fmt::Write as _;
use std::hint::black_box;
use std::ops::Range;
use std::time::Instant;

use contract_sqlx::payload::PayloadContract;
use serde::Deserialize;

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

#[derive(Deserialize)]
#[allow(dead_code)]
struct OrderEvent {
    event_id: u64,
    tenant: String,
    kind: EventKind,
    occurred_at: String,
    customer: Customer,
    items: Vec<LineItem>,
    total_cents: i64,
    currency: String,
    coupon: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum EventKind {
    Created,
    Paid,
    Shipped,
    Cancelled,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Customer {
    id: u64,
    email: String,
    name: String,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct LineItem {
    sku: String,
    qty: u32,
    price_cents: i64,
    weight_kg: f64,
}

// ---------------------------------------------------------------------------------------
// Options.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Options {
    n: usize,
    rounds: usize,
    poison_percent: f64,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Options {
            n: 1_000_000,
            rounds: 5,
            poison_percent: 0.0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| -> Result<String> {
                args.next()
                    .ok_or_else(|| format!("{name} needs a number").into())
            };
            match arg.as_str() {
                "--n" => options.n = positive("--n", &value("--n")?)?,
                "--rounds" => options.rounds = positive("--rounds", &value("--rounds")?)?,
                "--poison-percent" => {
                    let text = value("--poison-percent")?;
                    let p: f64 = text
                        .parse()
                        .map_err(|e| format!("--poison-percent {text}: {e}"))?;
                    if !(0.0..=100.0).contains(&p) {
                        return Err(format!("--poison-percent {text}: not within 0..=100").into());
                    }
                    options.poison_percent = p;
                }
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                other => {
                    return Err(format!(
                        "unknown argument `{other}`; usage: payload [--n N] [--rounds R] [--poison-percent P]"
                    )
                    .into());
                }
            }
        }
        Ok(options)
    }
}

fn positive(name: &str, text: &str) -> Result<usize> {
    let n: usize = text.parse().map_err(|e| format!("{name} {text}: {e}"))?;
    if n == 0 {
        return Err(format!("{name} must be at least 1").into());
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------
// Corpus: one text buffer, one range per payload (no allocation per payload).
// ---------------------------------------------------------------------------------------

/// splitmix64: deterministic, so every run measures the same corpus.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        let len = u64::try_from(choices.len()).unwrap_or(u64::MAX);
        choices[usize::try_from(self.below(len)).unwrap_or(0)]
    }
}

const FIRST_NAMES: &[&str] = &[
    "Jane", "Omar", "Li", "José", "Anaïs", "Kwame", "Sofia", "Björn", "Priya", "Mateo",
];
const LAST_NAMES: &[&str] = &[
    "Doe",
    "Haddad",
    "Wang",
    "García",
    "Müller",
    "Mensah",
    "Rossi",
    "Lindqvist",
    "Iyer",
];
const KINDS: &[&str] = &["created", "paid", "paid", "shipped", "cancelled"];
const CURRENCIES: &[&str] = &["EUR", "USD", "GBP", "JPY"];

fn write_event(out: &mut String, rng: &mut Rng, id: usize) {
    let first = rng.pick(FIRST_NAMES);
    let last = rng.pick(LAST_NAMES);
    let mut total = 0_u64;
    let _ = write!(
        out,
        r#"{{"event_id":{},"tenant":"tenant_{:03}","kind":"{}","occurred_at":"2025-{:02}-{:02}T{:02}:{:02}:{:02}Z","customer":{{"id":{},"email":"{}.{}{}@example.com","name":"{first} {last}"}},"items":["#,
        1_000_000 + id,
        rng.below(1000),
        rng.pick(KINDS),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60),
        10_000 + rng.below(90_000),
        first.to_lowercase(),
        last.to_lowercase(),
        rng.below(100),
    );
    let items = 1 + rng.below(2);
    for i in 0..items {
        let quantity = 1 + rng.below(5);
        let price = 199 + rng.below(9_800);
        total += quantity * price;
        let _ = write!(
            out,
            r#"{}{{"sku":"SKU-{:05}","qty":{quantity},"price_cents":{price},"weight_kg":{}.{:02}}}"#,
            if i == 0 { "" } else { "," },
            rng.below(100_000),
            rng.below(20),
            rng.below(100),
        );
    }
    let _ = write!(
        out,
        r#"],"total_cents":{total},"currency":"{}","coupon":"#,
        rng.pick(CURRENCIES)
    );
    if rng.below(10) < 3 {
        let _ = write!(out, r#""SPRING{:02}"}}"#, rng.below(100));
    } else {
        out.push_str("null}");
    }
}

/// Turns the valid event in `out[start..]` into one of six kinds of poison.
fn poison(out: &mut String, start: usize, rng: &mut Rng) {
    let event = out[start..].to_owned();
    out.truncate(start);
    let broken = match rng.below(6) {
        // A wrong type deep inside: items[0].qty as a string.
        0 => event.replacen(r#""qty":"#, r#""qty":"3","x":"#, 1),
        1 => event.replacen(r#""kind":""#, r#""kind":"teleported_"#, 1),
        2 => event.replacen(r#""total_cents":"#, r#""total_sum":"#, 1),
        3 => {
            let cut =
                usize::try_from(rng.below(u64::try_from(event.len()).unwrap_or(1))).unwrap_or(0);
            // The corpus is ASCII apart from names; back off to a char boundary.
            let cut = (0..=cut)
                .rev()
                .find(|&i| event.is_char_boundary(i))
                .unwrap_or(0);
            event[..cut].to_owned()
        }
        4 => event.replacen(r#""items":["#, r#""items":[,"#, 1),
        _ => format!("{event} {{}}"),
    };
    out.push_str(&broken);
}

struct Corpus {
    text: String,
    payloads: Vec<Range<usize>>,
    poisoned: usize,
}

fn generate(options: &Options) -> Corpus {
    let mut rng = Rng(0x00C0_FFEE_2025);
    let mut text = String::with_capacity(options.n * 330);
    let mut payloads = Vec::with_capacity(options.n);
    let mut poisoned = 0;
    // Poison is spread evenly: payload i is poison when the running share falls behind.
    let share = options.poison_percent / 100.0;
    for i in 0..options.n {
        let start = text.len();
        write_event(&mut text, &mut rng, i);
        #[allow(clippy::cast_precision_loss)]
        if (poisoned as f64) < share * (i + 1) as f64 {
            poison(&mut text, start, &mut rng);
            poisoned += 1;
        }
        payloads.push(start..text.len());
    }
    Corpus {
        text,
        payloads,
        poisoned,
    }
}

// ---------------------------------------------------------------------------------------
// Measurement.
// ---------------------------------------------------------------------------------------

struct Stats {
    min: f64,
    median: f64,
    max: f64,
}

impl Stats {
    fn of(mut samples: Vec<f64>) -> Self {
        samples.sort_by(f64::total_cmp);
        Stats {
            min: samples[0],
            median: samples[samples.len() / 2],
            max: samples[samples.len() - 1],
        }
    }
}

/// Payloads per slice. The two parsers take turns slice by slice, so both meet the same
/// load from whatever else runs on the machine; which one goes first swaps every slice,
/// so neither always finds the slice already in the cache.
const SLICE: usize = 1024;

type Parser<'a> = &'a dyn Fn(&str) -> Option<OrderEvent>;

/// Seconds spent on one slice of the corpus, and how many payloads were accepted.
fn time_slice(corpus: &Corpus, slice: &[Range<usize>], parse: Parser<'_>) -> (f64, usize) {
    let started = Instant::now();
    let mut accepted = 0_usize;
    for range in slice {
        let parsed = parse(&corpus.text[range.clone()]);
        accepted += usize::from(parsed.is_some());
        black_box(parsed);
    }
    (started.elapsed().as_secs_f64(), accepted)
}

/// One parser's round: seconds per slice, and how many payloads it accepted.
#[derive(Default)]
struct Round {
    slice_seconds: Vec<f64>,
    accepted: usize,
}

impl Round {
    fn per_second(&self, n: usize) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let n = n as f64;
        n / self.slice_seconds.iter().sum::<f64>()
    }
}

/// One round: every parser over the whole corpus, taking turns slice by slice (the order
/// rotates every slice).
fn round(corpus: &Corpus, parsers: &[Parser<'_>]) -> Vec<Round> {
    let mut rounds: Vec<Round> = parsers.iter().map(|_| Round::default()).collect();
    for (i, slice) in corpus.payloads.chunks(SLICE).enumerate() {
        for turn in 0..parsers.len() {
            let which = (i + turn) % parsers.len();
            let (seconds, accepted) = time_slice(corpus, slice, parsers[which]);
            rounds[which].slice_seconds.push(seconds);
            rounds[which].accepted += accepted;
        }
    }
    rounds
}

/// Throughput if every slice had run as fast as in its best round: what the machine
/// gives without interference from other processes (which strike a slice in one round,
/// rarely the same slice in every round).
fn best_per_second(rounds: &[Round], n: usize) -> f64 {
    let slices = rounds.first().map_or(0, |r| r.slice_seconds.len());
    let best: f64 = (0..slices)
        .map(|s| {
            rounds
                .iter()
                .map(|r| r.slice_seconds[s])
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    #[allow(clippy::cast_precision_loss)]
    let n = n as f64;
    n / best
}

fn main() {
    if let Err(e) = run() {
        eprintln!("payload bench FAILED: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let options = Options::parse()?;
    let generated = Instant::now();
    let corpus = generate(&options);
    #[allow(clippy::cast_precision_loss)]
    let avg_bytes = corpus.text.len() as f64 / options.n as f64;
    #[allow(clippy::cast_precision_loss)]
    let rejected_percent = 100.0 * corpus.poisoned as f64 / options.n as f64;
    eprintln!(
        "corpus generated in {:.1} s: {} payloads, {avg_bytes:.0} bytes on average, {} poison",
        generated.elapsed().as_secs_f64(),
        options.n,
        corpus.poisoned
    );

    let contract = PayloadContract::<OrderEvent>::named("order_event").with_version("1");
    // The payload as text (a table queue's `TEXT` column) and as bytes (a broker's body).
    let check_str = |text: &str| contract.check_str(text).ok();
    let check_bytes = |text: &str| contract.check(text.as_bytes()).ok();
    let bare = |text: &str| serde_json::from_str::<OrderEvent>(text).ok();
    let parsers: [Parser<'_>; 3] = [&check_str, &check_bytes, &bare];
    let labels = [
        "PayloadContract::check_str",
        "PayloadContract::check",
        "serde_json::from_str (floor)",
    ];

    // Warm-up (caches, allocator, CPU clock) on part of the corpus, not timed.
    for range in corpus.payloads.iter().take(100_000) {
        let text = &corpus.text[range.clone()];
        for parse in parsers {
            black_box(parse(text));
        }
    }

    let expected = options.n - corpus.poisoned;
    let mut by_parser: [Vec<Round>; 3] = Default::default();
    for number in 1..=options.rounds {
        let rounds = round(&corpus, &parsers);
        if rounds.iter().any(|r| r.accepted != expected) {
            let accepted: Vec<usize> = rounds.iter().map(|r| r.accepted).collect();
            return Err(format!(
                "accepted (check_str, check, bare): {accepted:?}, expected {expected} (the corpus or the check is wrong)"
            )
            .into());
        }
        let rates: Vec<f64> = rounds.iter().map(|r| r.per_second(options.n)).collect();
        eprintln!(
            "round {number}: check_str {:.0}/s, check {:.0}/s, bare {:.0}/s; ratios {:.3}, {:.3}",
            rates[0],
            rates[1],
            rates[2],
            rates[0] / rates[2],
            rates[1] / rates[2]
        );
        for (kept, r) in by_parser.iter_mut().zip(rounds) {
            kept.push(r);
        }
    }
    let rates =
        |rounds: &[Round]| -> Vec<f64> { rounds.iter().map(|r| r.per_second(options.n)).collect() };
    let ratio_to_bare = |which: usize| {
        Stats::of(
            rates(&by_parser[which])
                .iter()
                .zip(rates(&by_parser[2]))
                .map(|(c, b)| c / b)
                .collect(),
        )
    };
    let stats: Vec<Stats> = by_parser.iter().map(|r| Stats::of(rates(r))).collect();
    let best: Vec<f64> = by_parser
        .iter()
        .map(|r| best_per_second(r, options.n))
        .collect();
    let (text_ratio, bytes_ratio) = (ratio_to_bare(0), ratio_to_bare(1));
    let mb = |per_second: f64| per_second * avg_bytes / 1e6;
    println!(
        "payloads: {} (~{avg_bytes:.0} B, {rejected_percent:.1} % rejected), rounds: {}",
        options.n, options.rounds
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "payloads/s", "min", "median", "max", "best/slice", "MB/s med"
    );
    for ((label, s), best) in labels.iter().zip(&stats).zip(&best) {
        println!(
            "{label:<30} {:>10.0} {:>10.0} {:>10.0} {best:>10.0} {:>9.1}",
            s.min,
            s.median,
            s.max,
            mb(s.median)
        );
    }
    for (label, which, ratio) in [
        ("check_str", 0, &text_ratio),
        ("check (bytes)", 1, &bytes_ratio),
    ] {
        println!(
            "{label} / bare: medians {:.3}; within a round min {:.3}, median {:.3}, max {:.3}; best per slice {:.3}",
            stats[which].median / stats[2].median,
            ratio.min,
            ratio.median,
            ratio.max,
            best[which] / best[2]
        );
    }
    println!(
        "{{\"bench\":\"payload\",\"n\":{},\"check_vs_bare\":{:.3},\"check_bytes_vs_bare\":{:.3},\"rounds\":{},\"rejected_percent\":{rejected_percent:.2},\"avg_bytes\":{avg_bytes:.0},\"check_per_s\":{:.0},\"check_bytes_per_s\":{:.0},\"bare_per_s\":{:.0},\"round_ratio_min\":{:.3},\"round_ratio_median\":{:.3},\"round_ratio_max\":{:.3},\"bytes_round_ratio_min\":{:.3},\"bytes_round_ratio_median\":{:.3},\"bytes_round_ratio_max\":{:.3},\"best_slice_ratio\":{:.3},\"bytes_best_slice_ratio\":{:.3}}}",
        options.n,
        stats[0].median / stats[2].median,
        stats[1].median / stats[2].median,
        options.rounds,
        stats[0].median,
        stats[1].median,
        stats[2].median,
        text_ratio.min,
        text_ratio.median,
        text_ratio.max,
        bytes_ratio.min,
        bytes_ratio.median,
        bytes_ratio.max,
        best[0] / best[2],
        best[1] / best[2]
    );
    Ok(())
}
