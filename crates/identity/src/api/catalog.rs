//! Routes and default policy rules of this resource family (filled in as it is implemented).

use axum::Router;

use super::AppState;

/// Default policy rules (upstream names, secure-RBAC defaults).
pub(super) const POLICIES: &[(&str, &str)] = &[];

pub(super) fn routes() -> Router<AppState> {
    Router::new()
}
