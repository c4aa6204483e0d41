//! A busy handler for SQLite connections that waits for the write lock in short steps.
//!
//! SQLite lets one connection write at a time; the others wait in a busy handler. The one `PRAGMA busy_timeout`
//! installs sleeps 1, 2, 5, 10, 15, 20, 25 … 100 ms between tries, so under concurrent writers a statement that
//! would have waited 50 µs for a lock held 50 µs sleeps a millisecond or more, and the longer each write holds the
//! lock (a bigger database), the more of them sleep. Measured on the network benchmark: four clients filling a /16
//! slowed to 74 % of their starting rate while one client did not slow at all.
//!
//! This handler retries every 50 µs for the first 5 ms, then every millisecond, and gives up (`SQLITE_BUSY`, as
//! before) after the same 10 s the pragma allowed. sqlx offers no hook to a connection's raw handle through the
//! `Any` driver, so the handler is installed by a SQL function, `stratus_busy_handler()`, that an automatic
//! extension registers on every SQLite connection this process opens; [`INSTALL`] calls it once per connection
//! (sqlx sets its own `busy_timeout` when it opens a connection, which the call then replaces).

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr::null_mut;
use std::sync::Once;
use std::time::Duration;

use libsqlite3_sys as ffi;

/// Run once on each new SQLite connection: replaces its busy handler with [`busy`]; answers 1.
pub(crate) const INSTALL: &str = "SELECT stratus_busy_handler()";

const FUNCTION: &CStr = c"stratus_busy_handler";

/// Tries at [`SHORT`] intervals before the waits lengthen to [`LONG`].
const SHORT_TRIES: u32 = 100;
const SHORT: Duration = Duration::from_micros(50);
const LONG: Duration = Duration::from_millis(1);
/// Total wait before a statement fails with `SQLITE_BUSY`.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// Registers the function on every SQLite connection opened from now on (once per process).
pub(crate) fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `init` has the signature SQLite calls automatic extensions with and only registers a function on
        // the handle it is given.
        let rc = unsafe { ffi::sqlite3_auto_extension(Some(init)) };
        if rc != ffi::SQLITE_OK {
            tracing::warn!(rc, "cannot register the SQLite busy handler; new connections will fail to set up");
        }
    });
}

unsafe extern "C" fn init(db: *mut ffi::sqlite3, _err: *mut *mut c_char, _api: *const ffi::sqlite3_api_routines) -> c_int {
    // SAFETY: `db` is the connection being opened; the name is a static C string; no user data is passed.
    unsafe {
        ffi::sqlite3_create_function_v2(
            db,
            FUNCTION.as_ptr(),
            0,
            ffi::SQLITE_UTF8,
            null_mut(),
            Some(install),
            None,
            None,
            None,
        )
    }
}

unsafe extern "C" fn install(ctx: *mut ffi::sqlite3_context, _argc: c_int, _argv: *mut *mut ffi::sqlite3_value) {
    // SAFETY: `ctx` is the live context of this call; its connection is the one running the statement.
    unsafe {
        let db = ffi::sqlite3_context_db_handle(ctx);
        let rc = ffi::sqlite3_busy_handler(db, Some(busy), null_mut());
        ffi::sqlite3_result_int(ctx, c_int::from(rc == ffi::SQLITE_OK));
    }
}

/// SQLite's callback: `tries` is how many times this wait has already been retried. Non-zero means "try again".
unsafe extern "C" fn busy(_data: *mut c_void, tries: c_int) -> c_int {
    match pause(u32::try_from(tries).unwrap_or(0)) {
        Some(d) => {
            std::thread::sleep(d);
            1
        }
        None => 0,
    }
}

/// How long to sleep before try `tries + 1`; `None` once [`GIVE_UP_AFTER`] has been spent.
fn pause(tries: u32) -> Option<Duration> {
    if tries < SHORT_TRIES {
        return Some(SHORT);
    }
    let spent = SHORT * SHORT_TRIES + LONG * (tries - SHORT_TRIES);
    (spent < GIVE_UP_AFTER).then_some(LONG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_start_short_and_stop_after_the_timeout() {
        assert_eq!(pause(0), Some(SHORT));
        assert_eq!(pause(SHORT_TRIES - 1), Some(SHORT));
        assert_eq!(pause(SHORT_TRIES), Some(LONG));
        let mut total = Duration::ZERO;
        let mut tries = 0;
        while let Some(d) = pause(tries) {
            total += d;
            tries += 1;
        }
        assert!(total >= GIVE_UP_AFTER && total < GIVE_UP_AFTER + LONG, "{total:?} over {tries} tries");
    }
}
