//! Quality gates: named JSON Schemas that a value must satisfy before it is cached.
//!
//! - A schema is compiled once by [`Gate::compile`] and reused by every [`Gate::check`].
//!   Without a `$schema` keyword it is read as draft 2020-12.
//! - Nothing is ever fetched: `jsonschema` is built without its HTTP and file resolvers and
//!   the validator is set offline, so a schema whose `$ref` needs another document is refused.
//! - `pattern` and `patternProperties` run on the linear-time `regex` engine, so no pattern
//!   can make a check hang. Patterns only a backtracking engine supports (look-around,
//!   backreferences) are refused at compile time.
//! - Values and schemas are parsed by `serde_json`, whose recursion limit of 128 rejects
//!   nesting of 128 levels or more (127 is the deepest accepted) with an error instead of
//!   overflowing the stack.
//! - Linear time is not enough when the pattern itself is huge: `(?:a{100}){100}` runs
//!   at about 10 ns per byte per position. So every pattern is weighed at compile time by
//!   its *positions* (the characters and classes it can be at, repetitions multiplied out:
//!   `\d{4}` weighs 4, `(?:a{100}){100}` 10,000), which bounds how many matching threads
//!   can be alive at once. A pattern over [`MAX_PATTERN_WEIGHT`], or a schema with more
//!   than [`MAX_PATTERNS`] patterns, is refused. A check first multiplies the bytes of the
//!   value's strings and keys by the schema's total weight, and refuses a value whose
//!   work exceeds the caller's budget, without running it.
//! - A [`Rejection`] names the failing place in the value as a JSON Pointer; the root is
//!   written `/` (so is a root key that is the empty string, the only ambiguity).
//!
//! Nothing here imports `redis_module`.

use std::fmt;

use jsonschema::{error::ValidationErrorKind, PatternOptions, Validator};
use serde_json::Value;

/// Longest reason kept in an error, in bytes: a message may quote the whole offending value.
const MAX_REASON: usize = 300;

/// Heaviest single pattern a gate may hold, in positions (see the module notes).
pub const MAX_PATTERN_WEIGHT: u64 = 10_000;
/// Most patterns (`pattern` values and `patternProperties` keys) in one schema.
pub const MAX_PATTERNS: usize = 1024;

/// Why a schema could not become a gate. Displays as `invalid schema: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateError {
    InvalidSchema(String),
}

impl fmt::Display for GateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateError::InvalidSchema(reason) => write!(f, "invalid schema: {reason}"),
        }
    }
}

impl std::error::Error for GateError {}

/// Why a value was refused: where (`pointer`, `/` for the root) and why (`reason`).
/// Displays as `<pointer>: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub pointer: String,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.reason)
    }
}

impl std::error::Error for Rejection {}

/// A named, compiled JSON Schema.
#[derive(Clone)]
pub struct Gate {
    name: Vec<u8>,
    schema: Vec<u8>,
    validator: Validator,
    /// The sum of the weights of the schema's patterns.
    pattern_weight: u64,
}

/// Name and schema text; the compiled validator's own dump is long and unhelpful.
impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("schema", &String::from_utf8_lossy(&self.schema))
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// Parses and compiles `schema`; the result is reused for every check.
    pub fn compile(name: &[u8], schema: &[u8]) -> Result<Gate, GateError> {
        let invalid = GateError::InvalidSchema;
        let source = parse(schema).map_err(|r| invalid(r.reason))?;
        let validator = jsonschema::options()
            .offline()
            .with_pattern_options(PatternOptions::regex())
            .build(&source)
            .map_err(|e| {
                let mut reason = e.to_string();
                if matches!(e.kind(), ValidationErrorKind::Format { format } if format == "regex") {
                    reason.push_str(
                        " (patterns use the `regex` engine: no look-around or backreferences)",
                    );
                }
                invalid(at(e.instance_path().as_str(), &reason))
            })?;
        let pattern_weight = pattern_weight(&source).map_err(invalid)?;
        Ok(Gate {
            name: name.to_vec(),
            schema: schema.to_vec(),
            validator,
            pattern_weight,
        })
    }

    /// The schema exactly as it was given to [`Gate::compile`].
    pub fn schema(&self) -> &[u8] {
        &self.schema
    }

    /// The sum of the weights of the schema's patterns.
    #[cfg(test)]
    pub fn pattern_weight(&self) -> u64 {
        self.pattern_weight
    }

    /// Parses `value` as JSON and validates it; on failure reports the first error.
    /// A value whose pattern work (its string and key bytes x the schema's pattern
    /// weight) exceeds `max_work` is refused without being validated.
    pub fn check(&self, value: &[u8], max_work: u64) -> Result<(), Rejection> {
        let value = parse(value)?;
        if self.pattern_weight > 0 {
            let work = text_bytes(&value).saturating_mul(self.pattern_weight);
            if work > max_work {
                return Err(Rejection {
                    pointer: pointer(""),
                    reason: format!(
                        "too costly to check: {work} units of pattern work, over tcache.gate-max-work {max_work}"
                    ),
                });
            }
        }
        self.validator.validate(&value).map_err(|e| Rejection {
            pointer: pointer(e.instance_path().as_str()),
            reason: one_line(&e.to_string()),
        })
    }
}

/// The built-in `json` gate: any valid JSON document passes.
pub fn check_json(value: &[u8]) -> Result<(), Rejection> {
    parse(value).map(drop)
}

/// The bytes of every string and object key in `v`: what patterns can run on.
fn text_bytes(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.len() as u64,
        Value::Array(items) => items.iter().map(text_bytes).fold(0, u64::saturating_add),
        Value::Object(map) => map.iter().fold(0, |n, (k, v)| {
            n.saturating_add(k.len() as u64)
                .saturating_add(text_bytes(v))
        }),
        _ => 0,
    }
}

/// The patterns of a schema: every string under a `pattern` key and every key
/// of a `patternProperties` object, wherever they sit (a `pattern` member of a
/// `const` is counted too: the weight errs high, never low).
fn patterns(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| patterns(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("pattern", Value::String(p)) => out.push(p.clone()),
                    ("patternProperties", Value::Object(props)) => {
                        out.extend(props.keys().cloned())
                    }
                    _ => {}
                }
                patterns(v, out);
            }
        }
        _ => {}
    }
}

/// The total weight of a schema's patterns, or why they are refused.
fn pattern_weight(schema: &Value) -> Result<u64, String> {
    let mut found = Vec::new();
    patterns(schema, &mut found);
    if found.len() > MAX_PATTERNS {
        return Err(format!(
            "too many patterns: {} (at most {MAX_PATTERNS})",
            found.len()
        ));
    }
    let mut total = 0u64;
    for p in &found {
        let w = weigh(p);
        if w > MAX_PATTERN_WEIGHT {
            return Err(one_line(&format!(
                "pattern {p:?} is too large: it weighs {w} positions (at most {MAX_PATTERN_WEIGHT})"
            )));
        }
        total = total.saturating_add(w);
    }
    Ok(total)
}

/// The positions of pattern `p`: each literal byte and each class counts one,
/// a repetition multiplies its body by its largest finite bound (its minimum,
/// at least 1, when unbounded). A pattern the parser refuses (the validator
/// accepted it, so it is written in a dialect it translates) weighs its length.
fn weigh(p: &str) -> u64 {
    match regex_syntax::ParserBuilder::new()
        .nest_limit(256)
        .build()
        .parse(p)
    {
        Ok(hir) => positions(&hir),
        Err(_) => p.len() as u64,
    }
}

fn positions(h: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::HirKind;
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => 0,
        HirKind::Literal(lit) => lit.0.len() as u64,
        HirKind::Class(_) => 1,
        HirKind::Repetition(r) => {
            let times = r.max.unwrap_or(r.min).max(r.min).max(1);
            positions(&r.sub).saturating_mul(u64::from(times))
        }
        HirKind::Capture(c) => positions(&c.sub),
        HirKind::Concat(hs) | HirKind::Alternation(hs) => {
            hs.iter().map(positions).fold(0, u64::saturating_add)
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Value, Rejection> {
    let root = |reason: String| Rejection {
        pointer: pointer(""),
        reason: one_line(&reason),
    };
    let text = std::str::from_utf8(bytes).map_err(|e| root(format!("invalid UTF-8: {e}")))?;
    serde_json::from_str(text).map_err(|e| root(format!("invalid JSON: {e}")))
}

fn pointer(path: &str) -> String {
    if path.is_empty() { "/" } else { path }.to_string()
}

/// `reason`, prefixed with the schema location when there is one.
fn at(path: &str, reason: &str) -> String {
    if path.is_empty() {
        one_line(reason)
    } else {
        one_line(&format!("at {path}: {reason}"))
    }
}

/// One line (an error reply cannot hold a line break; runs of whitespace become one
/// space), cut to at most [`MAX_REASON`] bytes plus `...`.
fn one_line(s: &str) -> String {
    let mut out = String::new();
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Gate {
        /// A check with no work budget.
        fn check_all(&self, value: &[u8]) -> Result<(), Rejection> {
            self.check(value, u64::MAX)
        }
    }

    #[test]
    fn patterns_are_weighed_by_their_positions() {
        assert_eq!(weigh("abc"), 3);
        assert_eq!(weigh(r"^\d{4}-\d{2}-\d{2}$"), 10);
        assert_eq!(weigh(r"\w+"), 1);
        assert_eq!(weigh("(?:a{100}){100}"), 10_000);
        assert_eq!(weigh("(?:a{100}){100}(?:b{100}){100}"), 20_000);
        let g =
            gate(r#"{"properties":{"a":{"pattern":"x{3}"},"b":{"patternProperties":{"^k":{}}}}}"#);
        assert_eq!(g.pattern_weight(), 3 + 1);
        assert_eq!(gate(REPORT).pattern_weight(), 0);
    }

    #[test]
    fn huge_patterns_and_too_many_patterns_are_refused() {
        let r = refused(br#"{"pattern":"(?:a{100}){100}(?:b{100}){100}"}"#);
        assert!(r.contains("too large"), "{r}");
        let many: Vec<String> = (0..=MAX_PATTERNS)
            .map(|i| format!("\"^k{i}$\":{{}}"))
            .collect();
        let schema = format!("{{\"patternProperties\":{{{}}}}}", many.join(","));
        let r = refused(schema.as_bytes());
        assert!(r.contains("too many patterns"), "{r}");
    }

    #[test]
    fn a_check_over_the_work_budget_is_refused_before_it_runs() {
        let g = gate(r#"{"type":"string","pattern":"(?:a{30}){30}b"}"#);
        assert_eq!(g.pattern_weight(), 901);
        let value = format!("\"{}\"", "a".repeat(2000));
        let r = g.check(value.as_bytes(), 1_000_000).unwrap_err();
        assert!(
            r.reason.starts_with("too costly to check: 1802000 units"),
            "{}",
            r.reason
        );
        assert!(g
            .check(value.as_bytes(), 2_000_000)
            .is_err_and(|r| !r.reason.contains("costly")));
        // Numbers and punctuation are not pattern work: only strings and keys count.
        let nums = format!("[{}]", vec!["1"; 5000].join(","));
        let g =
            gate(r#"{"type":"array","items":{"type":"number"},"propertyNames":{"pattern":"^a"}}"#);
        assert_eq!(g.check(nums.as_bytes(), 1000), Ok(()));
    }
    use std::time::Instant;

    const REPORT: &str = r#"{"type":"object","required":["risk_score"],"properties":{"risk_score":{"type":"number","exclusiveMinimum":0}}}"#;

    fn gate(schema: &str) -> Gate {
        Gate::compile(b"g", schema.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn refused(schema: &[u8]) -> String {
        match Gate::compile(b"g", schema) {
            Err(GateError::InvalidSchema(reason)) => reason,
            Ok(_) => panic!("schema accepted: {}", String::from_utf8_lossy(schema)),
        }
    }

    fn nested(open: &str, leaf: &str, close: &str, depth: usize) -> String {
        format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn report_gate() {
        let g = gate(REPORT);
        assert_eq!(
            format!("{g:?}"),
            format!("Gate {{ name: \"g\", schema: {REPORT:?}, .. }}")
        );
        assert_eq!(g.schema(), REPORT.as_bytes());
        assert_eq!(g.check_all(br#"{"risk_score":0.4,"notes":"x"}"#), Ok(()));

        let r = g.check_all(br#"{"risk_score":0}"#).unwrap_err();
        assert_eq!(r.pointer, "/risk_score");
        assert_eq!(r.reason, "0 is less than or equal to the minimum of 0");
        assert_eq!(
            r.to_string(),
            "/risk_score: 0 is less than or equal to the minimum of 0"
        );

        let r = g.check_all(b"{}").unwrap_err();
        assert_eq!(r.pointer, "/");
        assert!(r.reason.contains("required"), "{r}");

        let r = g.check_all(b"not json").unwrap_err();
        assert_eq!(r.pointer, "/");
        assert!(r.reason.starts_with("invalid JSON: expected"), "{r}");
    }

    #[test]
    fn bad_values_are_rejected_with_a_reason() {
        let g = gate(r#"{}"#);
        let cases: &[(&[u8], &str)] = &[
            (b"", "EOF"),
            (b"\"\xff\"", "invalid UTF-8"),
            (b"[1, \xc3]", "invalid UTF-8"),
            (b"NaN", "invalid JSON"),
            (b"Infinity", "invalid JSON"),
            (b"-Infinity", "invalid JSON"),
            (b"[1, NaN]", "invalid JSON"),
            (b"{\"a\": Infinity}", "invalid JSON"),
            (b"1e999", "out of range"),
            (b"{\"a\":1} x", "trailing characters"),
            (b"[1][2]", "trailing characters"),
            (b"{\"a\":1,}", "invalid JSON"),
            (b"'single'", "invalid JSON"),
        ];
        for (value, why) in cases {
            for r in [check_json(value), g.check_all(value)] {
                let r = r.unwrap_err();
                assert_eq!(r.pointer, "/");
                assert!(r.reason.contains(why), "{value:?}: {r}");
            }
        }
        for ok in [&b" {\"a\": [1, 2.5e3, null, true]} \n"[..], b"\"x\"", b"0"] {
            assert_eq!(check_json(ok), Ok(()));
            assert_eq!(g.check_all(ok), Ok(()));
        }
    }

    #[test]
    fn nesting_is_limited_to_127_levels() {
        let g = gate(r#"{}"#);
        for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
            // serde_json counts the outermost level too: 127 levels pass, 128 do not.
            let ok = nested(open, "1", close, 127);
            assert_eq!(check_json(ok.as_bytes()), Ok(()));
            assert_eq!(g.check_all(ok.as_bytes()), Ok(()));
            for depth in [128, 129, 100_000] {
                let deep = nested(open, "1", close, depth);
                for r in [check_json(deep.as_bytes()), g.check_all(deep.as_bytes())] {
                    let r = r.unwrap_err();
                    assert!(r.reason.contains("recursion limit exceeded"), "{r}");
                }
            }
        }
    }

    #[test]
    fn big_array_of_numbers() {
        let g = gate(r#"{"type":"array","items":{"type":"number"}}"#);
        let mut value = String::from("[0");
        let mut i = 1u64;
        while value.len() < 10 << 20 {
            value.push_str(&format!(",{}.{}", i, i % 97));
            i += 1;
        }
        value.push(']');
        let t = Instant::now();
        assert_eq!(check_json(value.as_bytes()), Ok(()));
        let parse = t.elapsed();
        let t = Instant::now();
        assert_eq!(g.check_all(value.as_bytes()), Ok(()));
        eprintln!(
            "10 MB array, {i} numbers: check_json {parse:?}, gate check {:?}",
            t.elapsed()
        );
        value.insert_str(value.len() - 1, ",\"x\"");
        let r = g.check_all(value.as_bytes()).unwrap_err();
        assert_eq!(r.pointer, format!("/{i}"));
    }

    #[test]
    fn invalid_schemas() {
        assert!(refused(b"{not json").starts_with("invalid JSON"));
        assert!(refused(b"\xff").starts_with("invalid UTF-8"));
        for schema in [
            r#"{"type": 12}"#,
            r#"{"minimum":"x"}"#,
            r#"{"required":"risk_score"}"#,
            r#"{"properties":{"a":{"maxLength":-1}}}"#,
            r##"{"$ref":"#/$defs/missing"}"##,
            "12",
        ] {
            let reason = refused(schema.as_bytes());
            assert!(!reason.is_empty());
            eprintln!("{schema} -> {}", GateError::InvalidSchema(reason));
        }
    }

    #[test]
    fn remote_refs_are_refused_without_fetching() {
        for schema in [
            r#"{"$ref":"https://example.com/s.json"}"#,
            r#"{"properties":{"a":{"$ref":"http://example.com/s.json#/x"}}}"#,
            r#"{"$ref":"file:///etc/passwd"}"#,
            r#"{"$schema":"https://example.com/my-meta","type":"object"}"#,
        ] {
            let t = Instant::now();
            let reason = refused(schema.as_bytes());
            eprintln!("{schema} -> {reason} ({:?})", t.elapsed());
            assert!(
                reason.contains("Retrieval is disabled") || reason.contains("Unknown meta-schema"),
                "{reason}"
            );
        }
        // Local references still work.
        let g = gate(r##"{"$defs":{"n":{"type":"number"}},"items":{"$ref":"#/$defs/n"}}"##);
        assert!(g.check_all(b"[1,2]").is_ok());
        assert_eq!(g.check_all(b"[1,\"x\"]").unwrap_err().pointer, "/1");
    }

    #[test]
    fn deep_schema_is_refused() {
        let deep = nested(r#"{"allOf":["#, "{}", "]}", 100_000);
        assert!(refused(deep.as_bytes()).contains("recursion limit exceeded"));
        // 63 allOf levels around a leaf are 127 JSON levels: within the limit.
        let ok = nested(r#"{"allOf":["#, r#"{"type":"number"}"#, "]}", 63);
        assert!(gate(&ok).check_all(b"1").is_ok());
    }

    #[test]
    fn patterns_run_in_linear_time() {
        let g = gate(r#"{"type":"string","pattern":"^(a+)+$"}"#);
        let evil = format!("\"{}!\"", "a".repeat(50));
        let t = Instant::now();
        let r = g.check_all(evil.as_bytes()).unwrap_err();
        eprintln!("catastrophic pattern checked in {:?}", t.elapsed());
        assert_eq!(r.pointer, "/");
        assert!(r.reason.contains("does not match"), "{r}");
        assert!(g
            .check_all(format!("\"{}\"", "a".repeat(50)).as_bytes())
            .is_ok());

        let g = gate(r#"{"patternProperties":{"^(x+)+$":{"type":"number"}}}"#);
        let evil = format!("{{\"{}y\": \"s\", \"xx\": \"s\"}}", "x".repeat(50));
        assert_eq!(g.check_all(evil.as_bytes()).unwrap_err().pointer, "/xx");

        // Look-around and backreferences need backtracking: refused, on one line.
        for pattern in [r#""^(?!x)""#, r#""(?<=a)b""#, r#""(a)\\1""#] {
            let schema = format!(r#"{{"pattern":{pattern}}}"#);
            let reason = refused(schema.as_bytes());
            assert!(reason.contains("look-around"), "{reason}");
            eprintln!("{schema} -> {reason}");
        }
    }

    #[test]
    fn keywords() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                r#"{"type":"integer"}"#,
                &["1", "-3"],
                &["1.5", "\"1\"", "null"],
            ),
            (r#"{"type":["string","null"]}"#, &["\"a\"", "null"], &["1"]),
            (
                r#"{"required":["a","b"]}"#,
                &[r#"{"a":1,"b":2}"#, "[]"],
                &[r#"{"a":1}"#],
            ),
            (
                r#"{"properties":{"a":{"type":"string"}}}"#,
                &[r#"{"a":"x"}"#, r#"{"b":1}"#],
                &[r#"{"a":1}"#],
            ),
            (
                r#"{"items":{"type":"boolean"}}"#,
                &["[true]", "[]"],
                &["[true,1]"],
            ),
            (
                r#"{"minimum":1,"maximum":3}"#,
                &["1", "3"],
                &["0.99", "3.01"],
            ),
            (
                r#"{"exclusiveMinimum":1,"exclusiveMaximum":3}"#,
                &["2"],
                &["1", "3"],
            ),
            (
                r#"{"minLength":2,"maxLength":3}"#,
                &["\"ab\"", "\"été\""],
                &["\"a\"", "\"abcd\""],
            ),
            (r#"{"minItems":2}"#, &["[1,2]"], &["[1]"]),
            (
                r#"{"enum":["low","high",1]}"#,
                &["\"low\"", "1.0"],
                &["\"mid\""],
            ),
            (
                r#"{"const":{"a":[1]}}"#,
                &[r#"{"a":[1]}"#],
                &[r#"{"a":[2]}"#],
            ),
            (
                r#"{"pattern":"^[A-Z]{3}$"}"#,
                &["\"EUR\"", "5"],
                &["\"eur\""],
            ),
            (
                r#"{"allOf":[{"minimum":0},{"maximum":1}]}"#,
                &["0.5"],
                &["2"],
            ),
            (
                r#"{"anyOf":[{"type":"string"},{"minimum":0}]}"#,
                &["\"x\"", "1"],
                &["-1"],
            ),
            (
                r#"{"oneOf":[{"minimum":0},{"maximum":10}]}"#,
                &["-1", "11"],
                &["5"],
            ),
            (r#"{"not":{"type":"null"}}"#, &["0"], &["null"]),
            // Draft 2020-12 by default: `prefixItems` is a keyword...
            (
                r#"{"prefixItems":[{"type":"string"}]}"#,
                &["[\"a\",1]"],
                &["[1]"],
            ),
            // ...but an explicit `$schema` wins.
            (
                r#"{"$schema":"http://json-schema.org/draft-07/schema#","prefixItems":[{"type":"string"}]}"#,
                &["[1]"],
                &[],
            ),
        ];
        for (schema, good, bad) in cases {
            let g = gate(schema);
            for v in *good {
                assert_eq!(
                    g.check_all(v.as_bytes()),
                    Ok(()),
                    "{schema} should accept {v}"
                );
            }
            for v in *bad {
                assert!(
                    g.check_all(v.as_bytes()).is_err(),
                    "{schema} should reject {v}"
                );
            }
        }
    }

    #[test]
    fn reasons_are_short_single_lines() {
        let g = gate(r#"{"type":"number"}"#);
        let big = format!("\"{}\\n{}\"", "é".repeat(100_000), "x".repeat(10));
        let r = g.check_all(big.as_bytes()).unwrap_err();
        assert!(
            r.reason.len() <= MAX_REASON + 3 && r.reason.ends_with("..."),
            "{r}"
        );
        assert_eq!(one_line("a\r\n  b\tc"), "a b c");
        assert_eq!(one_line(&"é".repeat(200)).len(), MAX_REASON + 3);
    }

    #[test]
    fn gate_is_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Gate>();
    }

    /// `cargo test --release --lib core::gate -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure() {
        // The first compile in a process also builds the meta-schema validator.
        for _ in 0..2 {
            let t = Instant::now();
            gate(REPORT);
            eprintln!("compile report schema: {:?}", t.elapsed());
        }
        let g = gate(REPORT);
        let mut report = String::from(r#"{"risk_score":0.72,"summary":""#);
        report.push_str(&"lorem ipsum ".repeat(75));
        report.push_str(r#"","findings":[{"id":1,"severity":"high"},{"id":2,"severity":"low"}]}"#);
        let n = 100_000;
        let t = Instant::now();
        for _ in 0..n {
            assert!(g.check_all(report.as_bytes()).is_ok());
        }
        let per = t.elapsed() / n;
        eprintln!("check of a {} byte report: {per:?} each", report.len());
        let t = Instant::now();
        for _ in 0..n {
            assert!(check_json(report.as_bytes()).is_ok());
        }
        eprintln!("check_json of it: {:?} each", t.elapsed() / n);
    }
}
