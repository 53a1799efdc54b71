//! Asks serde what a type looks like: an enum's variant names, a struct's (or a struct
//! variant's) field names. A `Deserialize` impl hands these lists to its deserializer, so a
//! deserializer that records them and stops is an exact, always-current inventory.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, VariantAccess, Visitor};

#[derive(Debug)]
enum Found {
    Variants(&'static [&'static str]),
    Fields(&'static [&'static str]),
    NotAStructVariant,
    Other(#[allow(dead_code, reason = "shown by Debug in failure messages")] String),
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for Found {}

impl de::Error for Found {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Found::Other(msg.to_string())
    }
}

/// Stops at the first enum or struct; with `variant`, enters that variant of the enum.
struct Probe {
    variant: Option<&'static str>,
}

impl<'de> Deserializer<'de> for Probe {
    type Error = Found;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Found> {
        Err(Found::Other("not an enum or a struct".into()))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Found> {
        match self.variant {
            None => Err(Found::Variants(variants)),
            Some(name) => visitor.visit_enum(Enter(name)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Found> {
        Err(Found::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

struct Enter(&'static str);

impl<'de> EnumAccess<'de> for Enter {
    type Error = Found;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<(S::Value, Self), Found> {
        let name = seed.deserialize(de::value::BorrowedStrDeserializer::<Found>::new(self.0))?;
        Ok((name, self))
    }
}

impl<'de> VariantAccess<'de> for Enter {
    type Error = Found;

    fn unit_variant(self) -> Result<(), Found> {
        Err(Found::NotAStructVariant)
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, _: S) -> Result<S::Value, Found> {
        Err(Found::NotAStructVariant)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Found> {
        Err(Found::NotAStructVariant)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Found> {
        Err(Found::Fields(fields))
    }
}

/// The wire names of `T`'s variants.
pub fn variants<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Probe { variant: None }) {
        Err(Found::Variants(v)) => v,
        other => panic!(
            "{} is not an enum: {:?}",
            std::any::type_name::<T>(),
            other.err()
        ),
    }
}

/// The field names of `T`, a struct.
pub fn fields<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    match T::deserialize(Probe { variant: None }) {
        Err(Found::Fields(f)) => f,
        other => panic!(
            "{} is not a struct: {:?}",
            std::any::type_name::<T>(),
            other.err()
        ),
    }
}

/// The field names of `T`'s struct variant `variant`; `None` for a unit or newtype variant.
pub fn variant_fields<T: for<'de> serde::Deserialize<'de>>(
    variant: &'static str,
) -> Option<&'static [&'static str]> {
    match T::deserialize(Probe {
        variant: Some(variant),
    }) {
        Err(Found::Fields(f)) => Some(f),
        Err(Found::NotAStructVariant) => None,
        other => panic!(
            "cannot enter {}::{variant}: {:?}",
            std::any::type_name::<T>(),
            other.err()
        ),
    }
}

#[test]
fn the_probe_sees_variants_and_fields() {
    use session_vault_proto::message::{Request, StatusInfo};
    let v = variants::<Request>();
    assert!(
        v.contains(&"hello") && v.contains(&"get_sent_file"),
        "{v:?}"
    );
    assert_eq!(
        variant_fields::<Request>("hello"),
        Some(&["protocol_major", "protocol_minor", "client"][..])
    );
    assert_eq!(variant_fields::<Request>("status"), None);
    assert!(fields::<StatusInfo>().contains(&"vault_path"));
}
