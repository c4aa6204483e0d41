//! Upstream's extra-spec operators, shared by the filters that match flavor extra specs against what a host has
//! (`ComputeCapabilitiesFilter`, `AggregateInstanceExtraSpecsFilter`).
//!
//! A requirement is words separated by whitespace. When the first word is an operator, it applies to the rest:
//!
//! | operator | passes when the host's value …                                   |
//! |----------|------------------------------------------------------------------|
//! | `=`      | as a number is at least the operand                              |
//! | `==`     | as a number equals the operand                                   |
//! | `!=`     | as a number differs from the operand                             |
//! | `>=`     | as a number is at least the operand                              |
//! | `<=`     | as a number is at most the operand                               |
//! | `s==` `s!=` `s<` `s<=` `s>` `s>=` | compares so with the operand as strings  |
//! | `<in>`   | contains the operand as a substring                              |
//! | `<all-in>` | contains every operand as a substring                          |
//! | `<or>`   | equals one of the operands (`<or> a <or> b <or> c`)              |
//!
//! Without an operator the value must equal the whole requirement. A missing value passes no operator (but
//! equals nothing either). A number that does not parse makes the comparison fail.

/// Whether a host's `value` satisfies the extra spec requirement `req`.
pub fn matches(value: Option<&str>, req: &str) -> bool {
    let mut words = req.split_whitespace();
    let op = words.next();
    let Some(op) = op.filter(|op| is_operator(op)) else {
        return value == Some(req);
    };
    let Some(value) = value else { return false };
    let operands: Vec<&str> = words.collect();
    if op == "<or>" {
        // Alternatives sit at the even positions, the `<or>` keywords between them.
        return operands.iter().step_by(2).any(|alt| *alt == value);
    }
    let Some(first) = operands.first().copied() else { return false };
    let num = |f: fn(f64, f64) -> bool| match (value.trim().parse::<f64>(), first.parse::<f64>()) {
        (Ok(x), Ok(y)) => f(x, y),
        _ => false,
    };
    match op {
        "=" | ">=" => num(|x, y| x >= y),
        "==" => num(|x, y| x == y),
        "!=" => num(|x, y| x != y),
        "<=" => num(|x, y| x <= y),
        "s==" => value == first,
        "s!=" => value != first,
        "s<" => value < first,
        "s<=" => value <= first,
        "s>" => value > first,
        "s>=" => value >= first,
        "<in>" => value.contains(first),
        "<all-in>" => operands.iter().all(|o| value.contains(o)),
        _ => false,
    }
}

fn is_operator(word: &str) -> bool {
    matches!(
        word,
        "=" | "<in>" | "<all-in>" | "==" | "!=" | ">=" | "<=" | "s==" | "s!=" | "s<" | "s<=" | "s>" | "s>=" | "<or>"
    )
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn operators() {
        // (value, requirement, passes)
        let cases: &[(Option<&str>, &str, bool)] = &[
            // No operator: the whole requirement, verbatim.
            (Some("1"), "1", true),
            (Some("1"), "2", false),
            (Some("true"), "true", true),
            (Some("a b"), "a b", true),
            (Some("True"), "true", false),
            (None, "1", false),
            (Some(""), "", true),
            // `=` is "at least", numerically.
            (Some("123"), "= 123", true),
            (Some("124"), "= 123", true),
            (Some("122"), "= 123", false),
            (Some("12.5"), "= 12", true),
            (Some("abc"), "= 1", false),
            (Some("1"), "= abc", false),
            (Some("1"), "=", false),
            // Numeric equality and comparisons.
            (Some("123"), "== 123", true),
            (Some("123.0"), "== 123", true),
            (Some("124"), "== 123", false),
            (Some("124"), "!= 123", true),
            (Some("123"), "!= 123", false),
            (Some("2"), ">= 2", true),
            (Some("10"), ">= 9", true),
            (Some("1"), ">= 2", false),
            (Some("2"), "<= 2", true),
            (Some("3"), "<= 2", false),
            (None, ">= 1", false),
            // String comparisons: lexicographic, so "10" < "9".
            (Some("abc"), "s== abc", true),
            (Some("abd"), "s== abc", false),
            (Some("abd"), "s!= abc", true),
            (Some("abc"), "s!= abc", false),
            (Some("10"), "s< 9", true),
            (Some("9"), "s< 10", false),
            (Some("abc"), "s<= abc", true),
            (Some("abd"), "s<= abc", false),
            (Some("b"), "s> a", true),
            (Some("a"), "s> a", false),
            (Some("a"), "s>= a", true),
            (Some("a"), "s>= b", false),
            // Substrings.
            (Some("12311321"), "<in> 11", true),
            (Some("12311321"), "<in> 12311321", true),
            (Some("12311321"), "<in> 12310321", false),
            (Some("vmx sse avx"), "<in> avx", true),
            (Some("1"), "<in>", false),
            (Some("['aes', 'mmx', 'avx']"), "<all-in> aes mmx", true),
            (Some("['aes', 'mmx', 'avx']"), "<all-in> aes sse", false),
            (Some("aes"), "<all-in>", false),
            // Alternatives.
            (Some("12"), "<or> 11 <or> 12", true),
            (Some("13"), "<or> 11 <or> 12", false),
            (Some("11"), "<or> 11", true),
            (Some("12"), "<or> 11 <or> 12 <or>", true),
            (Some("x"), "<or>", false),
            (None, "<or> 11 <or> 12", false),
            // A word that is not an operator makes the requirement a plain string.
            (Some("<gt> 1"), "<gt> 1", true),
            (Some("2"), "<gt> 1", false),
        ];
        for (value, req, want) in cases {
            assert_eq!(matches(*value, req), *want, "{value:?} against {req:?}");
        }
    }
}
