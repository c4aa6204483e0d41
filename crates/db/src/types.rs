//! Value types that need help to be portable through the `Any` driver.

use sqlx::any::{Any, AnyTypeInfo, AnyTypeInfoKind, AnyValueRef};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Decode, Encode, Type};

/// A boolean that decodes on every backend: from PostgreSQL `BOOLEAN` and from the integer that
/// SQLite and MariaDB store for `{bool}` columns (non-zero is `true`). It encodes like `bool`.
///
/// Plain `bool` only decodes on PostgreSQL; read `{bool}` columns (and boolean expressions such
/// as `EXISTS (...)`) as `Bool`:
///
/// ```ignore
/// let enabled: bool = row.try_get::<db::Bool, _>("enabled")?.into();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Bool(pub bool);

impl From<bool> for Bool {
    fn from(b: bool) -> Self {
        Bool(b)
    }
}

impl From<Bool> for bool {
    fn from(b: Bool) -> Self {
        b.0
    }
}

impl Type<Any> for Bool {
    fn type_info() -> AnyTypeInfo {
        <bool as Type<Any>>::type_info()
    }

    fn compatible(ty: &AnyTypeInfo) -> bool {
        ty.kind() == AnyTypeInfoKind::Bool || ty.kind().is_integer()
    }
}

impl Encode<'_, Any> for Bool {
    fn encode_by_ref(
        &self,
        buf: &mut <Any as Database>::ArgumentBuffer,
    ) -> Result<IsNull, BoxDynError> {
        <bool as Encode<Any>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Any> for Bool {
    fn decode(value: AnyValueRef<'r>) -> Result<Self, BoxDynError> {
        match <bool as Decode<Any>>::decode(value.clone()) {
            Ok(b) => Ok(Bool(b)),
            Err(_) => <i64 as Decode<Any>>::decode(value).map(|i| Bool(i != 0)),
        }
    }
}
