//! Integration tests of the object store: HTTP tests through the whole-cloud harness, and datastore tests on every
//! database backend.

mod acl;
mod bulk;
mod cors;
mod http;
mod large;
mod quota;
mod ring;
mod staticweb;
mod store;
mod tempurl;
mod versions;
