//! JSON response bodies: [`Json`] answers like `axum::Json`, through a
//! compact serde serializer of our own whose string escaping looks at eight
//! bytes at a time.
//!
//! Why not serde_json's serializer: it checks every byte of every string
//! against a table, one byte per step, and a response is mostly strings (ids,
//! names, timestamps). In an order listing, a page of 20 orders, that scan
//! alone was a fifth of the gateway's instructions (bench/HISTORY.md has the
//! counts before and after). What this writes is byte for byte what
//! `serde_json::to_vec` writes for the same value (the tests compare the
//! two); floating-point numbers are formatted by serde_json itself. Request
//! bodies are still parsed by serde_json.

use std::fmt::Display;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use gocommerce_platform::ErrorCode;
use serde::Serialize;
use serde::ser::{self, Impossible};
use tracing::error;

use crate::problem::Problem;

/// A response whose body is `T` as JSON (`application/json`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match to_vec(&self.0) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(error) => {
                error!(%error, "failed to write a response body");
                Problem::new(ErrorCode::Internal, "the response could not be written")
                    .into_response()
            }
        }
    }
}

/// Why a value could not be written: its `Serialize` impl failed, or a map
/// had keys that are not strings or numbers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: Display>(message: T) -> Self {
        Self(message.to_string())
    }
}

/// `value` as compact JSON.
fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    // Most bodies are a product view or smaller; a page grows a few times.
    let mut out = Vec::with_capacity(512);
    value.serialize(&mut Serializer { out: &mut out })?;
    Ok(out)
}

/// Appends `value` to `out` as a JSON string: quoted, with `"`, `\` and the
/// control characters escaped as serde_json escapes them.
fn write_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Start of the bytes not written yet, all of which need no escaping up
    // to the next escape.
    let mut run = 0;
    while let Some(escaped) = next_escape(bytes, run) {
        out.extend_from_slice(&bytes[run..escaped]);
        write_escape(out, bytes[escaped]);
        run = escaped + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// Where the first byte from `from` on that must be escaped is, if any.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(chunk) = bytes[at..].first_chunk::<8>() {
        let flagged = needs_escape(u64::from_le_bytes(*chunk));
        if flagged != 0 {
            // The lowest flag is exact (a borrow only ever runs upward), so
            // this is the first byte of the word to escape.
            return Some(at + (flagged.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    // The last few bytes (and most object keys are shorter than a word) one
    // at a time; padding them into a word costs more than it saves.
    bytes[at..]
        .iter()
        .position(|&byte| ESCAPED[usize::from(byte)])
        .map(|offset| at + offset)
}

/// The bytes a JSON string must escape: the control characters, `"` and `\`.
static ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// A word with the high bit set in the lowest of its bytes (read little
/// endian) that is below 0x20, `"` or `\`; zero when none is.
fn needs_escape(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The classic "has a zero byte" test: a byte is 0 if subtracting 1 borrows
    // into its high bit while that bit was clear in the byte itself.
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    // Likewise a byte is below 0x20 if subtracting 0x20 borrows into its
    // high bit while that bit was clear (bytes of multi-byte characters have
    // it set, and need no escaping).
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    control | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\')))
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => b'"',
        b'\\' => b'\\',
        0x08 => b'b',
        0x0c => b'f',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            let hex = [HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]];
            out.extend_from_slice(b"\\u00");
            out.extend_from_slice(&hex);
            return;
        }
    };
    out.extend_from_slice(&[b'\\', short]);
}

/// A serializer's `serialize_<integer>` methods, each passing its value to
/// `$write(self, value)`.
macro_rules! integers {
    ($write:path: $($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method(self, v: $ty) -> Result<(), Error> {
                $write(self, v)
            }
        )*
    };
}

fn write_float<F: Serialize>(out: &mut Vec<u8>, value: F) -> Result<(), Error> {
    // Rare in our bodies (only inside free-form product attributes), so the
    // exact formatting, and `null` for NaN and infinities, is serde_json's.
    serde_json::to_writer(out, &value).map_err(ser::Error::custom)
}

struct Serializer<'a> {
    out: &'a mut Vec<u8>,
}

impl Serializer<'_> {
    fn integer(&mut self, value: impl itoa::Integer) -> Result<(), Error> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        Ok(())
    }

    /// Opens the object an enum variant is wrapped in, up to its value:
    /// `{"variant":`.
    fn open_variant(&mut self, variant: &str) {
        self.out.push(b'{');
        write_str(self.out, variant);
        self.out.push(b':');
    }
}

/// An array or object being written; `first` until its first element.
struct Compound<'s, 'a> {
    ser: &'s mut Serializer<'a>,
    first: bool,
    /// Closes an enum variant's wrapping object too (`{"variant":[..]}`).
    variant: bool,
}

impl<'s, 'a> Compound<'s, 'a> {
    /// Writes `bracket` and starts the array or object it opens.
    fn open(ser: &'s mut Serializer<'a>, bracket: u8, variant: bool) -> Self {
        ser.out.push(bracket);
        Self {
            ser,
            first: true,
            variant,
        }
    }

    fn separate(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.ser.out.push(b',');
        }
    }

    fn key(&mut self, key: &str) {
        self.separate();
        write_str(self.ser.out, key);
        self.ser.out.push(b':');
    }

    fn close(self, bracket: u8) {
        self.ser.out.push(bracket);
        if self.variant {
            self.ser.out.push(b'}');
        }
    }
}

impl<'s, 'a> ser::Serializer for &'s mut Serializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'s, 'a>;
    type SerializeTuple = Compound<'s, 'a>;
    type SerializeTupleStruct = Compound<'s, 'a>;
    type SerializeTupleVariant = Compound<'s, 'a>;
    type SerializeMap = Compound<'s, 'a>;
    type SerializeStruct = Compound<'s, 'a>;
    type SerializeStructVariant = Compound<'s, 'a>;

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!(Serializer::integer:
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64), serialize_i128(i128),
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64), serialize_u128(u128)
    );

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        write_float(self.out, v)
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        write_float(self.out, v)
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        write_str(self.out, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        use ser::SerializeSeq;
        let mut seq = self.serialize_seq(Some(v.len()))?;
        for byte in v {
            seq.serialize_element(byte)?;
        }
        seq.end()
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.open_variant(variant);
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::open(self, b'[', false))
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'s, 'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.open_variant(variant);
        Ok(Compound::open(self, b'[', true))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Compound<'s, 'a>, Error> {
        Ok(Compound::open(self, b'{', false))
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'s, 'a>, Error> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.open_variant(variant);
        Ok(Compound::open(self, b'{', true))
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.separate();
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b']');
        Ok(())
    }
}

/// Tuples of every kind are arrays, written as sequences are.
macro_rules! like_a_sequence {
    ($($trait:ident::$method:ident),*) => {
        $(
            impl ser::$trait for Compound<'_, '_> {
                type Ok = ();
                type Error = Error;

                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                    ser::SerializeSeq::serialize_element(self, value)
                }

                fn end(self) -> Result<(), Error> {
                    ser::SerializeSeq::end(self)
                }
            }
        )*
    };
}

like_a_sequence!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.separate();
        key.serialize(MapKey { out: self.ser.out })?;
        self.ser.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b'}');
        Ok(())
    }
}

impl ser::SerializeStruct for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.key(key);
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.close(b'}');
        Ok(())
    }
}

impl ser::SerializeStructVariant for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }

    fn end(self) -> Result<(), Error> {
        ser::SerializeStruct::end(self)
    }
}

/// An object's key: JSON keys are strings, so numbers, booleans and chars are
/// quoted as serde_json quotes them, and anything else is refused.
struct MapKey<'a> {
    out: &'a mut Vec<u8>,
}

impl MapKey<'_> {
    fn quoted(self, value: impl Display) -> Result<(), Error> {
        write_str(self.out, &value.to_string());
        Ok(())
    }
}

fn key_must_be_a_string() -> Error {
    Error("key must be a string".to_owned())
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.out, v);
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.quoted(v)
    }

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.quoted(v)
    }

    integers!(MapKey::quoted:
        serialize_i8(i8), serialize_i16(i16), serialize_i32(i32), serialize_i64(i64), serialize_i128(i128),
        serialize_u8(u8), serialize_u16(u16), serialize_u32(u32), serialize_u64(u64), serialize_u128(u128)
    );

    fn serialize_f32(self, _v: f32) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_f64(self, _v: f64) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit(self) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::*;

    /// Asserts that our writer and serde_json write `value` identically.
    #[track_caller]
    fn same_as_serde_json<T: Serialize + ?Sized>(value: &T) {
        let ours = to_vec(value).expect("ours failed");
        let theirs = serde_json::to_vec(value).expect("serde_json failed");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "bodies differ"
        );
    }

    #[test]
    fn every_single_character_below_0x80_is_written_as_serde_json_writes_it() {
        for byte in 0u8..0x80 {
            let c = char::from(byte);
            same_as_serde_json(&c);
            same_as_serde_json(&c.to_string());
            // At every position of a word and of the tail after it.
            for at in 0..20 {
                let mut text = "x".repeat(20);
                text.replace_range(at..=at, &c.to_string());
                same_as_serde_json(&text);
            }
        }
    }

    #[test]
    fn random_strings_of_escapes_ascii_and_multibyte_characters_match_serde_json() {
        let alphabet: Vec<char> =
            "\"\\\n\r\t\u{8}\u{c}\u{0}\u{1f}\u{7f} aZ09/é€😀\u{2028}\u{a2}\u{dc}"
                .chars()
                .collect();
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..5_000 {
            let len = rng.gen_range(0..40);
            let text: String = (0..len)
                .map(|_| {
                    if rng.gen_bool(0.7) {
                        char::from(rng.gen_range(b'a'..=b'z'))
                    } else {
                        alphabet[rng.gen_range(0..alphabet.len())]
                    }
                })
                .collect();
            same_as_serde_json(&text);
        }
    }

    #[test]
    fn numbers_at_their_limits_and_floats_match_serde_json() {
        same_as_serde_json(&(
            i64::MIN,
            i64::MAX,
            u64::MAX,
            0u8,
            -1i8,
            i128::MIN,
            u128::MAX,
        ));
        same_as_serde_json(&[0.1f64, -0.0, 1e300, 12.5, f64::NAN, f64::INFINITY]);
        same_as_serde_json(&[1.5f32, f32::NEG_INFINITY]);
    }

    #[test]
    fn free_form_values_with_nesting_match_serde_json() {
        let value = json!({
            "colour": "red \"dark\"",
            "sizes": [1, 2.5, -3, null, true, false, [], {}],
            "nested": {"a": {"b": ["c", {"d": "e\n"}]}},
            "": "",
        });
        same_as_serde_json(&value);
    }

    #[test]
    fn derived_structs_enums_options_and_maps_match_serde_json() {
        #[derive(Serialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        enum Status {
            Pending,
            Held(u32),
            Split(u8, u8),
            Moved { to: String },
        }
        #[derive(Serialize)]
        struct Unit;
        #[derive(Serialize)]
        struct Id(String);
        #[derive(Serialize)]
        struct Pair(i32, &'static str);
        #[derive(Serialize)]
        struct View {
            id: Id,
            statuses: Vec<Status>,
            #[serde(skip_serializing_if = "Option::is_none")]
            skipped: Option<String>,
            present: Option<String>,
            absent: Option<String>,
            unit: Unit,
            pair: Pair,
            bytes: &'static [u8],
            counts: BTreeMap<u32, bool>,
            flags: BTreeMap<bool, char>,
            letters: BTreeMap<char, ()>,
        }

        same_as_serde_json(&View {
            id: Id("0190-\u{1}".to_owned()),
            statuses: vec![
                Status::Pending,
                Status::Held(3),
                Status::Split(1, 2),
                Status::Moved { to: "b".to_owned() },
            ],
            skipped: None,
            present: Some("yes".to_owned()),
            absent: None,
            unit: Unit,
            pair: Pair(-7, "seven"),
            bytes: b"ab",
            counts: BTreeMap::from([(1, true), (20, false)]),
            flags: BTreeMap::from([(false, 'n'), (true, 'y')]),
            letters: BTreeMap::from([('"', ())]),
        });
    }

    async fn body_of(response: Response) -> String {
        use http_body_util::BodyExt;
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8 body")
    }

    #[tokio::test]
    async fn a_value_is_answered_as_application_json() {
        let response = Json(json!({"name": "tea"})).into_response();

        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(body_of(response).await, r#"{"name":"tea"}"#);
    }

    #[tokio::test]
    async fn a_value_that_cannot_be_written_is_answered_with_a_500_problem() {
        let keyed_by_bytes = BTreeMap::from([(vec![1u8], 1)]);

        let response = Json(keyed_by_bytes).into_response();

        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            crate::problem::PROBLEM_JSON
        );
        let body: serde_json::Value =
            serde_json::from_str(&body_of(response).await).expect("a JSON problem");
        assert_eq!(body["detail"], "the response could not be written");
    }

    #[test]
    fn a_map_keyed_by_something_other_than_a_string_is_refused() {
        let by_bytes = BTreeMap::from([(vec![1u8], 1)]);

        let error = to_vec(&by_bytes).expect_err("a sequence key was accepted");

        assert_eq!(error.to_string(), "key must be a string");
    }
}
