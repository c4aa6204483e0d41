//! Integration tests for the auth crate: `HttpValidator` against a loopback server speaking Keystone's v3 token API.

mod http_validator;
mod keystone;
