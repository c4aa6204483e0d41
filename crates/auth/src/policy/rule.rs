//! Check strings: parsing into a [`Check`] tree and evaluating it against credentials and a target.

use serde_json::{Map, Value};

/// A parsed check string.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Check {
    /// `@` or the empty string.
    True,
    /// `!`.
    False,
    /// `role:NAME`, compared case-insensitively with the credentials' roles.
    Role(Template),
    /// `rule:NAME`.
    Rule(String),
    /// `LEFT:TEMPLATE`.
    Generic {
        left: Left,
        right: Template,
    },
    /// A check kind this engine does not implement (`http:`, `https:`); always false.
    Unsupported(String),
    Not(Box<Check>),
    And(Vec<Check>),
    Or(Vec<Check>),
}

/// The left-hand side of a generic check.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Left {
    /// A literal (`'text'`, `"text"`, `True`, `False`, `None`, an integer), rendered as Python's `str()` would.
    Literal(String),
    /// A dotted path into the credentials; lists along the way match if any element matches.
    Path(Vec<String>),
}

/// The right-hand side of a check: literal text with `%(path)s` substitutions from the target.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

#[derive(Clone, Debug, PartialEq)]
enum Piece {
    Text(String),
    Field(String),
}

impl Template {
    fn parse(s: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = s;
        while let Some(i) = rest.find('%') {
            text.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                text.push('%');
                rest = tail;
            } else if let Some(inner) = after.strip_prefix('(') {
                let Some(end) = inner.find(")s") else {
                    return Err(format!("unterminated substitution in {s:?}; expected %(name)s"));
                };
                let field = &inner[..end];
                if field.is_empty() {
                    return Err(format!("empty substitution in {s:?}"));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(field.to_string()));
                rest = &inner[end + 2..];
            } else {
                return Err(format!("stray '%' in {s:?}; substitutions are written %(name)s"));
            }
        }
        text.push_str(rest);
        if !text.is_empty() || pieces.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template(pieces))
    }

    /// The template with the target's values filled in; `None` when a field is missing, null or not a scalar.
    fn render(&self, target: &Value) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(path) => out.push_str(&python_str(lookup_target(target, path)?)?),
            }
        }
        Some(out)
    }
}

/// A target field: a flat key as written (`"target.token.user_id"`, as Keystone flattens its targets), else the
/// dotted path walked through nested objects.
fn lookup_target<'a>(target: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = target.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(target, |v, key| v.get(key))
}

/// A scalar as Python's `str()` renders it; `None` for null, lists and objects, which never match.
fn python_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// oslo.policy's `GenericCheck._find_in_dict`: walk `path` through `value`; a list matches if any element does.
fn find_in(value: &Value, path: &[String], expected: &str) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|item| find_in(item, path, expected)),
        _ => match path.split_first() {
            None => python_str(value).is_some_and(|s| s == expected),
            Some((key, rest)) => value.get(key).is_some_and(|v| find_in(v, rest, expected)),
        },
    }
}

impl Check {
    /// Evaluates this check. `rule` resolves `rule:NAME` references (`None` for unknown names, which are false).
    pub(crate) fn eval<'r>(
        &self,
        creds: &Map<String, Value>,
        target: &Value,
        rule: &dyn Fn(&str) -> Option<&'r Check>,
    ) -> bool {
        match self {
            Check::True => true,
            Check::False | Check::Unsupported(_) => false,
            Check::Role(name) => {
                let Some(name) = name.render(target) else { return false };
                creds
                    .get("roles")
                    .and_then(Value::as_array)
                    .is_some_and(|roles| roles.iter().filter_map(Value::as_str).any(|r| r.eq_ignore_ascii_case(&name)))
            }
            Check::Rule(name) => rule(name).is_some_and(|c| c.eval(creds, target, rule)),
            Check::Generic { left, right } => {
                let Some(expected) = right.render(target) else { return false };
                match left {
                    Left::Literal(lit) => *lit == expected,
                    Left::Path(path) => match path.split_first() {
                        Some((first, rest)) => creds.get(first).is_some_and(|v| find_in(v, rest, &expected)),
                        None => false,
                    },
                }
            }
            Check::Not(inner) => !inner.eval(creds, target, rule),
            Check::And(all) => all.iter().all(|c| c.eval(creds, target, rule)),
            Check::Or(any) => any.iter().any(|c| c.eval(creds, target, rule)),
        }
    }

    /// Calls `f` with every check in the tree, this one included.
    pub(crate) fn walk(&self, f: &mut dyn FnMut(&Check)) {
        f(self);
        match self {
            Check::Not(inner) => inner.walk(f),
            Check::And(cs) | Check::Or(cs) => cs.iter().for_each(|c| c.walk(f)),
            _ => {}
        }
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Check(Check),
}

/// Splits a check string into tokens the way oslo.policy does: on whitespace, with parentheses peeled off the
/// start and end of each word, and `and`/`or`/`not` recognised case-insensitively.
fn tokenize(rule: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    for word in rule.split_whitespace() {
        let clean = word.trim_start_matches('(');
        tokens.extend(std::iter::repeat_with(|| Token::Open).take(word.len() - clean.len()));
        let core = clean.trim_end_matches(')');
        let closing = clean.len() - core.len();
        if !core.is_empty() {
            tokens.push(match core.to_ascii_lowercase().as_str() {
                "and" => Token::And,
                "or" => Token::Or,
                "not" => Token::Not,
                _ => Token::Check(parse_check(core)?),
            });
        }
        tokens.extend(std::iter::repeat_with(|| Token::Close).take(closing));
    }
    Ok(tokens)
}

/// One check: `@`, `!`, `KIND:MATCH`.
fn parse_check(s: &str) -> Result<Check, String> {
    match s {
        "@" => return Ok(Check::True),
        "!" => return Ok(Check::False),
        _ => {}
    }
    let (kind, right) = split_kind(s)?;
    match kind {
        "rule" if right.is_empty() => Err("empty rule name in \"rule:\"".into()),
        "rule" => Ok(Check::Rule(right.to_string())),
        "role" if right.is_empty() => Err("empty role name in \"role:\"".into()),
        "role" => Ok(Check::Role(Template::parse(right)?)),
        "http" | "https" => Ok(Check::Unsupported(s.to_string())),
        _ => Ok(Check::Generic { left: parse_left(kind)?, right: Template::parse(right)? }),
    }
}

/// Splits `KIND:MATCH` at the first colon outside a quoted left-hand literal.
fn split_kind(s: &str) -> Result<(&str, &str), String> {
    let quote = s.chars().next().filter(|c| *c == '\'' || *c == '"');
    let search_from = match quote {
        Some(q) => match s[1..].find(q) {
            Some(end) => end + 2,
            None => return Err(format!("unterminated quote in {s:?}")),
        },
        None => 0,
    };
    match s[search_from..].find(':') {
        Some(i) if search_from + i > 0 => Ok((&s[..search_from + i], &s[search_from + i + 1..])),
        Some(_) => Err(format!("missing check kind in {s:?}")),
        None => Err(format!("{s:?} is not a check; expected KIND:VALUE, '@' or '!'")),
    }
}

/// The left side of a generic check: a Python literal (as `ast.literal_eval` would read it) or a credentials path.
fn parse_left(kind: &str) -> Result<Left, String> {
    for q in ['\'', '"'] {
        if let Some(inner) = kind.strip_prefix(q) {
            return match inner.strip_suffix(q) {
                Some(lit) => Ok(Left::Literal(lit.to_string())),
                None => Err(format!("text after the quoted literal in {kind:?}")),
            };
        }
    }
    if matches!(kind, "True" | "False" | "None") {
        return Ok(Left::Literal(kind.to_string()));
    }
    if let Ok(n) = kind.parse::<i64>() {
        return Ok(Left::Literal(n.to_string()));
    }
    let path: Vec<String> = kind.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("malformed credentials path {kind:?}"));
    }
    Ok(Left::Path(path))
}

/// Parses a whole check string. Grammar (precedence `not` > `and` > `or`):
/// `or := and ("or" and)*`, `and := not ("and" not)*`, `not := "not" not | "(" or ")" | check`.
pub(crate) fn parse(rule: &str) -> Result<Check, String> {
    let tokens = tokenize(rule)?;
    if tokens.is_empty() {
        return Ok(Check::True);
    }
    let mut parser = Parser { tokens: tokens.into_iter().peekable() };
    let check = parser.or_expr()?;
    match parser.tokens.next() {
        None => Ok(check),
        Some(Token::Close) => Err("unbalanced ')'".into()),
        Some(t) => Err(format!("unexpected {} after a complete expression", describe(&t))),
    }
}

struct Parser {
    tokens: std::iter::Peekable<std::vec::IntoIter<Token>>,
}

impl Parser {
    fn or_expr(&mut self) -> Result<Check, String> {
        let mut terms = vec![self.and_expr()?];
        while self.tokens.next_if_eq(&Token::Or).is_some() {
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Check::Or(terms) })
    }

    fn and_expr(&mut self) -> Result<Check, String> {
        let mut terms = vec![self.not_expr()?];
        while self.tokens.next_if_eq(&Token::And).is_some() {
            terms.push(self.not_expr()?);
        }
        Ok(if terms.len() == 1 { terms.remove(0) } else { Check::And(terms) })
    }

    fn not_expr(&mut self) -> Result<Check, String> {
        match self.tokens.next() {
            Some(Token::Not) => Ok(Check::Not(Box::new(self.not_expr()?))),
            Some(Token::Open) => {
                let inner = self.or_expr()?;
                match self.tokens.next() {
                    Some(Token::Close) => Ok(inner),
                    Some(t) => Err(format!("expected ')' but found {}", describe(&t))),
                    None => Err("missing ')'".into()),
                }
            }
            Some(Token::Check(c)) => Ok(c),
            Some(t) => Err(format!("expected a check but found {}", describe(&t))),
            None => Err("expected a check but the rule ended".into()),
        }
    }
}

fn describe(t: &Token) -> &'static str {
    match t {
        Token::Open => "'('",
        Token::Close => "')'",
        Token::And => "'and'",
        Token::Or => "'or'",
        Token::Not => "'not'",
        Token::Check(_) => "a check",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn role(n: &str) -> Check {
        Check::Role(Template(vec![Piece::Text(n.into())]))
    }

    fn creds(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn eval(rule: &str, c: &Value, target: &Value) -> bool {
        parse(rule).unwrap().eval(&creds(c.clone()), target, &|_| None)
    }

    #[test]
    fn atoms() {
        assert_eq!(parse("@").unwrap(), Check::True);
        assert_eq!(parse("!").unwrap(), Check::False);
        assert_eq!(parse("").unwrap(), Check::True);
        assert_eq!(parse("  \t ").unwrap(), Check::True);
        assert_eq!(parse("rule:admin_api").unwrap(), Check::Rule("admin_api".into()));
        assert_eq!(parse("role:admin").unwrap(), role("admin"));
        assert_eq!(parse("http://example.com/check").unwrap(), Check::Unsupported("http://example.com/check".into()));
    }

    #[test]
    fn precedence_is_not_and_or() {
        assert_eq!(
            parse("role:a or role:b and role:c").unwrap(),
            Check::Or(vec![role("a"), Check::And(vec![role("b"), role("c")])])
        );
        assert_eq!(
            parse("role:a and role:b or role:c").unwrap(),
            Check::Or(vec![Check::And(vec![role("a"), role("b")]), role("c")])
        );
        assert_eq!(
            parse("not role:a and role:b").unwrap(),
            Check::And(vec![Check::Not(Box::new(role("a"))), role("b")])
        );
        assert_eq!(parse("not not role:a").unwrap(), Check::Not(Box::new(Check::Not(Box::new(role("a"))))));
    }

    #[test]
    fn parentheses_group_and_may_touch_checks() {
        assert_eq!(
            parse("(role:a or role:b) and role:c").unwrap(),
            Check::And(vec![Check::Or(vec![role("a"), role("b")]), role("c")])
        );
        assert_eq!(
            parse("not (role:a or role:b)").unwrap(),
            Check::Not(Box::new(Check::Or(vec![role("a"), role("b")])))
        );
        assert_eq!(parse("((role:a))").unwrap(), role("a"));
        assert_eq!(parse("( role:a )").unwrap(), role("a"));
        // A substitution's own parentheses are not grouping.
        assert!(matches!(parse("(project_id:%(project_id)s)").unwrap(), Check::Generic { .. }));
    }

    #[test]
    fn keywords_are_case_insensitive_and_whitespace_is_free() {
        assert_eq!(parse("role:a  OR\n\trole:b").unwrap(), Check::Or(vec![role("a"), role("b")]));
        assert_eq!(parse("NOT role:a").unwrap(), Check::Not(Box::new(role("a"))));
        assert_eq!(parse("role:a And role:b").unwrap(), Check::And(vec![role("a"), role("b")]));
    }

    #[test]
    fn quoted_and_python_literals_on_the_left() {
        let Check::Generic { left, .. } = parse("'member':%(role)s").unwrap() else { panic!("not generic") };
        assert_eq!(left, Left::Literal("member".into()));
        let Check::Generic { left, .. } = parse("\"a:b\":%(x)s").unwrap() else { panic!("not generic") };
        assert_eq!(left, Left::Literal("a:b".into()));
        let Check::Generic { left, .. } = parse("True:%(enforce_scope)s").unwrap() else { panic!("not generic") };
        assert_eq!(left, Left::Literal("True".into()));
        let Check::Generic { left, .. } = parse("target.token.user_id:x").unwrap() else { panic!("not generic") };
        assert_eq!(left, Left::Path(vec!["target".into(), "token".into(), "user_id".into()]));
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "role:a and",
            "and role:a",
            "role:a or or role:b",
            "(role:a",
            "role:a)",
            "()",
            "not",
            "role:a role:b",
            "admin",
            ":x",
            "role:",
            "rule:",
            "'open:%(x)s",
            "'a'b:%(x)s",
            "project_id:%(project_id",
            "project_id:%(project_id)",
            "project_id:%()s",
            "x:50%",
            "a..b:c",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn roles_compare_case_insensitively() {
        let c = json!({"roles": ["Admin", "reader"]});
        assert!(eval("role:admin", &c, &json!({})));
        assert!(eval("role:READER", &c, &json!({})));
        assert!(!eval("role:member", &c, &json!({})));
        assert!(!eval("role:admin", &json!({}), &json!({})));
        // Role names may be substituted from the target too.
        assert!(eval("role:%(wanted)s", &c, &json!({"wanted": "admin"})));
        assert!(!eval("role:%(wanted)s", &c, &json!({})));
    }

    #[test]
    fn substitutions_walk_the_target() {
        let c = json!({"project_id": "p1", "user_id": "u1", "domain_id": "d1"});
        assert!(eval("project_id:%(project_id)s", &c, &json!({"project_id": "p1"})));
        assert!(!eval("project_id:%(project_id)s", &c, &json!({"project_id": "p2"})));
        let t = json!({"target": {"token": {"user_id": "u1"}, "project": {"domain_id": "d1"}}});
        assert!(eval("user_id:%(target.token.user_id)s", &c, &t));
        assert!(eval("domain_id:%(target.project.domain_id)s", &c, &t));
        // Keystone's flattened form: the dotted key itself.
        assert!(eval("user_id:%(target.token.user_id)s", &c, &json!({"target.token.user_id": "u1"})));
        // Literal text around substitutions, and escaped percent signs.
        assert!(eval("user_id:u%(n)s", &c, &json!({"n": 1})));
        assert!(eval("share:50%%", &json!({"share": "50%"}), &json!({})));
    }

    #[test]
    fn missing_or_null_keys_are_false_not_errors() {
        let c = json!({"project_id": "p1"});
        assert!(!eval("project_id:%(project_id)s", &c, &json!({})));
        assert!(!eval("project_id:%(project_id)s", &c, &json!({"project_id": null})));
        assert!(!eval("domain_id:%(domain_id)s", &c, &json!({"domain_id": "d1"})));
        assert!(!eval("project_id:%(a.b.c)s", &c, &json!({"a": "flat"})));
        assert!(!eval("project_id:%(project_id)s", &c, &json!([1, 2])));
        // Unset on both sides still does not match.
        assert!(!eval("domain_id:%(domain_id)s", &json!({"domain_id": null}), &json!({"domain_id": null})));
    }

    #[test]
    fn literals_and_python_booleans() {
        let c = json!({"is_admin_project": true, "system_scope": "all", "roles": ["a"]});
        assert!(eval("is_admin_project:True", &c, &json!({})));
        assert!(!eval("is_admin_project:False", &c, &json!({})));
        assert!(eval("system_scope:all", &c, &json!({})));
        assert!(eval("True:%(enforce_scope)s", &c, &json!({"enforce_scope": true})));
        assert!(!eval("True:%(enforce_scope)s", &c, &json!({"enforce_scope": false})));
        assert!(eval("'shared':%(visibility)s", &c, &json!({"visibility": "shared"})));
        assert!(eval("1:%(n)s", &c, &json!({"n": 1})));
        // A generic check on a list matches any element.
        assert!(eval("roles:a", &c, &json!({})));
        let nested = json!({"groups": [{"id": "g1"}, {"id": "g2"}]});
        assert!(eval("groups.id:g2", &nested, &json!({})));
        assert!(!eval("groups.id:g3", &nested, &json!({})));
    }

    #[test]
    fn boolean_operators() {
        let c = json!({"roles": ["member"], "project_id": "p1"});
        let t = json!({"project_id": "p1"});
        assert!(eval("role:member and project_id:%(project_id)s", &c, &t));
        assert!(!eval("role:admin and project_id:%(project_id)s", &c, &t));
        assert!(eval("role:admin or project_id:%(project_id)s", &c, &t));
        assert!(!eval("not role:member", &c, &t));
        assert!(eval("not role:admin", &c, &t));
        // not binds tighter than and, and tighter than or.
        assert!(eval("not role:admin and role:member", &c, &t));
        assert!(eval("role:member or role:admin and !", &c, &t));
        assert!(!eval("(role:member or role:admin) and !", &c, &t));
        assert!(!eval("http://policy.example/check", &c, &t));
    }
}
