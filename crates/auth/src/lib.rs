//! Authentication and authorisation for Stratus services: who is calling ([`Context`]), whether their token is
//! good ([`TokenValidator`], [`HttpValidator`], [`CachingValidator`]), what they may do ([`Policy`]), and the axum
//! glue ([`require_auth`], [`optional_auth`], and [`Context`] as an extractor).
//!
//! Handlers and middleware return [`api_common::ApiError`]; each service's wire layer renders it in that service's
//! error style.
//!
//! # Policy language
//!
//! Rules are written in oslo.policy's check-string language, so upstream `policy.yaml` files apply unchanged:
//!
//! ```text
//! rule     := ""                                  empty: always true
//!           | or
//! or       := and ( "or" and )*                   lowest precedence
//! and      := not ( "and" not )*
//! not      := "not" not | "(" or ")" | check      highest precedence
//! check    := "@"                                 always true
//!           | "!"                                 always false
//!           | "rule:" NAME                        another rule; undefined names are false (warned at load)
//!           | "role:" TEMPLATE                    the caller has this role (case-insensitive)
//!           | ("http:" | "https:") ...            unsupported: false (warned at load)
//!           | LEFT ":" TEMPLATE                   generic check
//! LEFT     := "'" TEXT "'" | '"' TEXT '"'          a literal
//!           | "True" | "False" | "None" | INTEGER a Python literal, compared as Python's str() renders it
//!           | KEY ( "." KEY )*                    a path into the credentials; a list matches if any element does
//! TEMPLATE := ( TEXT | "%(" PATH ")s" | "%%" )*   text with substitutions from the target
//! ```
//!
//! Words are separated by whitespace; parentheses may touch the checks they enclose (`(role:a or role:b)`);
//! `and`, `or` and `not` are case-insensitive. `KIND:VALUE` splits at the first colon (outside a quoted literal).
//!
//! Credentials are the [`Context`] as a flat map (`user_id`, `user_domain_id`, `project_id`, `project_domain_id`,
//! `domain_id`, `system_scope`, `roles`, `is_admin_project`, …, plus `is_admin`, the outcome of the
//! `context_is_admin` rule). The target is a JSON value: `%(a.b)s` takes the key `"a.b"` if the target has it (as
//! Keystone flattens its targets), otherwise walks `a` then `b`. Booleans render as `True`/`False`. A missing,
//! null or non-scalar value makes the check false, never an error, and unset credentials never match.
//!
//! Differences from oslo.policy, all failing closed: malformed check strings are load errors instead of
//! always-false rules, `rule:` references to undefined rules are false rather than falling back to `default`,
//! and the legacy list-of-lists JSON form is not accepted.

mod context;
mod error;
mod keystone;
mod middleware;
pub mod policy;
mod validator;

pub use context::Context;
pub use error::AuthError;
pub use keystone::{HttpValidator, ServiceCredentials};
pub use middleware::{AUTH_TOKEN_HEADER, AuthLayerState, SubjectToken, optional_auth, require_auth};
pub use policy::{BASE_RULES, Policy};
pub use validator::{CacheConfig, CachingValidator, TokenValidator};
