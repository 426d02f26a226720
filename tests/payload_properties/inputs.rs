//! The seeded inputs of `payload_properties`: arbitrary bytes, valid UTF-8, JSON-ish token
//! soup, edits of valid payloads, huge numbers, and nesting up to and past serde_json's
//! recursion limit (128). Deterministic: the same seed gives the same inputs on every run.

/// splitmix64.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).expect("n fits in u64")).expect("below n")
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    fn char(&mut self) -> char {
        match self.below(8) {
            0..=2 => char::from(b' ' + u8::try_from(self.below(95)).expect("ascii")),
            3 => char::from(u8::try_from(self.below(32)).expect("control")),
            4 => *self.pick(&['"', '\\', '{', '}', '[', ']', ':', ',', '\u{7f}']),
            5 => *self.pick(&[
                'é', 'ß', '日', '\u{200b}', '\u{301}', '\u{feff}', '🦀', '\u{85}',
            ]),
            _ => loop {
                if let Some(c) =
                    char::from_u32(u32::try_from(self.next() % 0x11_0000).expect("u32"))
                {
                    break c;
                }
            },
        }
    }
}

#[rustfmt::skip]
const TOKENS: &[&str] = &[
    "{", "}", "[", "]", ",", ":", " ", "\n", r#""order_id""#, r#""status""#, r#""items""#,
    r#""sku""#, r#""price""#, r#""qty""#, r#""note""#, r#""type""#, r#""click""#,
    r#""key""#, r#""code""#, r#""a""#, r#""b""#, r#""x""#, r#""id""#, r#""pairs""#,
    r#""by_id""#, r#""open""#, r#""paid""#, r#""refunded""#, r#""7""#, r#""\u0000""#,
    r#""\ud800""#, r#""\udc00\ud800""#, r#""\ud83d\ude00""#, r#""a\u001bb""#, r#""tab\tx""#,
    r#""line\nx""#, r#""\u007f""#, r#""\u200b""#, r#""é""#, r#""\\""#, r#""\"""#, r#""\/""#,
    "\"", "\\", "true", "false", "null", "0", "-1", "3", "1.5", "1e400", "-0",
    "18446744073709551616", "9223372036854775808", "255", "256", "1e-400", "01", "NaN",
];

/// A valid payload for one of the contracts.
fn valid(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => format!(
            r#"{{"order_id": {}, "status": "{}", "items": [{{"sku": "a-{}", "price": {}, "qty": {}}}, {{"sku": "é\"x", "price": -5, "qty": 1}}], "note": {}}}"#,
            rng.below(1_000_000),
            rng.pick(&["open", "paid"]),
            rng.below(100),
            rng.below(10_000),
            rng.below(9),
            rng.pick(&["null", r#""rush \u00e9""#, r#""""#]),
        ),
        1 => format!(
            r#"{{"a": {}, "b": [1, 2, {}]}}"#,
            rng.below(100),
            rng.below(256)
        ),
        2 => format!(
            r#"{{"pairs": [2, {}], "by_id": {{"{}": true, "7": false}}}}"#,
            2 * rng.below(50),
            rng.below(256)
        ),
        3 => format!(r#"{{"type": "click", "x": {}, "y": -2}}"#, rng.below(2000)),
        4 => format!(
            r#"{{"id": {}, "at": null, "k": [true, {{"n": 1.5}}]}}"#,
            rng.below(99)
        ),
        _ => r#"{"type": "key", "code": "\u00e9"}"#.to_owned(),
    }
}

fn soup(rng: &mut Rng) -> Vec<u8> {
    let n = 1 + rng.below(40);
    (0..n)
        .map(|_| *rng.pick(TOKENS))
        .collect::<String>()
        .into_bytes()
}

fn edited(rng: &mut Rng) -> Vec<u8> {
    let mut raw = valid(rng).into_bytes();
    for _ in 0..rng.below(5) {
        let at = rng.below(raw.len() + 1);
        match rng.below(7) {
            0 if at < raw.len() => raw[at] = rng.byte(),
            1 if at < raw.len() => raw[at] = *rng.pick(b"\"\\{}[]:, 0-ex\n"),
            2 => {
                let end = (at + 1 + rng.below(8)).min(raw.len());
                raw.drain(at.min(end)..end);
            }
            3 => {
                let token = rng.pick(TOKENS).as_bytes();
                raw.splice(at..at, token.iter().copied());
            }
            4 => raw.truncate(at),
            5 => {
                let end = (at + rng.below(30)).min(raw.len());
                let copy = raw[at.min(end)..end].to_vec();
                raw.splice(at..at, copy);
            }
            _ => {
                let text: String = (0..1 + rng.below(6)).map(|_| rng.char()).collect();
                raw.splice(at..at, text.into_bytes());
            }
        }
    }
    raw
}

fn huge_number(rng: &mut Rng) -> Vec<u8> {
    let mut n = String::new();
    if rng.below(2) == 0 {
        n.push('-');
    }
    n.extend(
        (0..1 + rng.below(500))
            .map(|_| char::from(b'0' + u8::try_from(rng.below(10)).expect("digit"))),
    );
    if rng.below(3) == 0 {
        n.push('.');
        n.extend((0..1 + rng.below(50)).map(|_| '7'));
    }
    if rng.below(3) == 0 {
        n.push_str(rng.pick::<&str>(&["e", "E", "e+", "e-"]));
        n.push_str(&rng.below(1_000_000).to_string());
    }
    let raw = match rng.below(4) {
        0 => n,
        1 => format!(r#"{{"order_id": {n}, "status": "open", "items": []}}"#),
        2 => format!(r#"{{"a": 1, "b": [{n}]}}"#),
        _ => format!(r#"{{"type": "click", "x": {n}, "y": 1}}"#),
    };
    raw.into_bytes()
}

fn nested(rng: &mut Rng) -> Vec<u8> {
    // Mostly around the limit; rarely far past it (long inputs, slow in a debug build).
    let depth = match rng.below(1000) {
        0..=699 => 120 + rng.below(15),
        700..=979 => 1 + rng.below(300),
        980..=997 => 1000 + rng.below(1000),
        _ => 20_000,
    };
    let (open, close) = if rng.below(2) == 0 {
        ("[", "]")
    } else {
        (r#"{"a":"#, "}")
    };
    let closed = match rng.below(4) {
        0 => depth.saturating_sub(1),
        1 => depth / 2,
        _ => depth,
    };
    let inner = format!("{}1{}", open.repeat(depth), close.repeat(closed));
    let raw = match rng.below(3) {
        0 => inner,
        1 => format!(r#"{{"order_id": 1, "status": "open", "items": [], "x": {inner}}}"#),
        _ => format!(r#"{{"id": 1, "deep": {inner}}}"#),
    };
    raw.into_bytes()
}

/// One input of a random kind.
pub fn input(rng: &mut Rng) -> Vec<u8> {
    match rng.below(100) {
        0..=14 => (0..rng.below(64)).map(|_| rng.byte()).collect(),
        15..=24 => (0..rng.below(40))
            .map(|_| rng.char())
            .collect::<String>()
            .into_bytes(),
        25..=49 => soup(rng),
        50..=89 => edited(rng),
        90..=94 => huge_number(rng),
        _ => nested(rng),
    }
}
