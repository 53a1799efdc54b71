//! Decoding that tolerates a later minor version: error codes and events this version does
//! not know.
//!
//! `PROTOCOL.md` §6 lets a minor version add error codes and events, and tells clients to
//! treat an unknown code as a generic failure and to ignore an unknown event. A derived
//! `Deserialize` would fail the whole frame on them (and with it the client's connection),
//! so [`ErrorCode`] and [`Event`] decode through [`deserialize_open`]: a name this version
//! knows is decoded exactly as the derived code would (strict about its fields), any other
//! name becomes `Other(name)` and its content, whatever it is, is skipped.
//!
//! The derived code lives in private *mirrors* of the two enums (`#[serde(remote)]`): the
//! mirrors' `Serialize` matches on the real enums exhaustively, so a variant added to
//! `message.rs` without its mirror line does not compile.
//!
//! Unknown map keys inside known structures need nothing here: serde ignores them unless
//! told otherwise (`deny_unknown_fields` is used nowhere in this crate). New optional fields
//! decode as `None` when absent.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::message::{ErrorCode, Event};

/// The derived coding of the [`ErrorCode`] variants this version knows.
#[derive(Serialize, Deserialize)]
#[serde(remote = "ErrorCode", rename_all = "snake_case")]
enum KnownErrorCode {
    Locked,
    Uninitialized,
    AlreadyInitialized,
    NoSuchSession,
    NameTaken,
    SessionBusy {
        holder_pid: Option<u32>,
    },
    PermissionDenied,
    BadPassphrase {
        retry_after_ms: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unchecked: bool,
    },
    WeakPassphrase,
    InvalidRequest,
    FrameTooLarge {
        limit: u32,
    },
    ProtocolMismatch {
        server_major: u16,
    },
    Corrupt,
    Storage,
    Unsupported,
    ShuttingDown,
    Internal,
    // Encoded and decoded by the impls below, never by the derived code.
    #[serde(skip)]
    Other(String),
}

/// The derived coding of the [`Event`] variants this version knows.
#[derive(Serialize, Deserialize)]
#[serde(remote = "Event", rename_all = "snake_case")]
enum KnownEvent {
    Locked,
    Unlocked,
    ShuttingDown,
    DisconnectedByAdmin,
    #[serde(skip)]
    Other(String),
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ErrorCode::Other(name) => s.serialize_str(name),
            known => KnownErrorCode::serialize(known, s),
        }
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_open(d, |d| KnownErrorCode::deserialize(d), ErrorCode::Other)
    }
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Event::Other(name) => s.serialize_str(name),
            known => KnownEvent::serialize(known, s),
        }
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_open(d, |d| KnownEvent::deserialize(d), Event::Other)
    }
}

/// Decodes an externally tagged enum with `known` (a derived decoder), or as `other(name)`
/// when the variant name is not one `known` lists.
///
/// `known` is handed a deserializer that intercepts its `deserialize_enum`: the variant
/// name is read first and checked against the names the derived code passes; an unknown
/// one has its content skipped and is reported back through `unknown`, out of band, since
/// the derived code's visitor cannot build an `Other`.
fn deserialize_open<'de, D, T>(
    d: D,
    known: impl FnOnce(Open<'_, D>) -> Result<T, D::Error>,
    other: impl FnOnce(String) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let mut unknown = None;
    let result = known(Open {
        inner: d,
        unknown: &mut unknown,
    });
    match (result, unknown) {
        (_, Some(name)) => Ok(other(name)),
        (result, None) => result,
    }
}

/// A deserializer that forwards everything to `inner` but watches `deserialize_enum`.
struct Open<'a, D> {
    inner: D,
    unknown: &'a mut Option<String>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Open<'_, D> {
    type Error = D::Error;

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(
            name,
            variants,
            OpenVisitor {
                visitor,
                variants,
                unknown: self.unknown,
            },
        )
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

struct OpenVisitor<'a, V> {
    visitor: V,
    variants: &'static [&'static str],
    unknown: &'a mut Option<String>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for OpenVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let (name, content) = data.variant::<String>()?;
        if self.variants.contains(&name.as_str()) {
            return self.visitor.visit_enum(Named { name, content });
        }
        skip_content(content)?;
        *self.unknown = Some(name);
        Err(de::Error::custom("unknown variant, decoded as Other"))
    }
}

/// Consumes an unknown variant's content: nothing for the bare-name form, any one value for
/// the `{name: content}` form. Only a newtype access tells the two apart without knowing
/// the content's shape: a bare name refuses it before looking at the input.
fn skip_content<'de, A: de::VariantAccess<'de>>(content: A) -> Result<(), A::Error> {
    let entered = Cell::new(false);
    match content.newtype_variant_seed(Skip(&entered)) {
        Ok(()) => Ok(()),
        // The deserializer had no content to offer: a bare name.
        Err(_) if !entered.get() => Ok(()),
        Err(e) => Err(e),
    }
}

struct Skip<'a>(&'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.0.set(true);
        de::IgnoredAny::deserialize(d).map(|_| ())
    }
}

/// An enum access whose variant name was already read: hands the name to the derived
/// visitor again, and the content access as it was.
struct Named<A> {
    name: String,
    content: A,
}

impl<'de, A: de::VariantAccess<'de>> EnumAccess<'de> for Named<A> {
    type Error = A::Error;
    type Variant = A;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, A), A::Error> {
        let value = seed.deserialize(self.name.into_deserializer())?;
        Ok((value, self.content))
    }
}
