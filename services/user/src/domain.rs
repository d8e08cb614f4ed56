//! The rules of profiles, preferences and addresses: validation of every
//! field a client sends, and the role mirror's conversions.

use gocommerce_platform::Role;
use gocommerce_platform::validate;
use gocommerce_proto::auth::v1 as auth_pb;
use uuid::Uuid;

use crate::country;
use crate::error::UserError;

/// How many addresses one user may keep.
pub const MAX_ADDRESSES: i64 = 20;
pub const LINE_MAX_CHARS: usize = 200;
pub const CITY_MAX_CHARS: usize = 100;
pub const REGION_MAX_CHARS: usize = 100;
pub const POSTAL_CODE_MAX_CHARS: usize = 20;
/// RFC 5646 asks implementations to support tags of at least 35 characters.
pub const LOCALE_MAX_CHARS: usize = 35;

pub fn parse_uuid(field: &str, raw: &str) -> Result<Uuid, UserError> {
    Uuid::parse_str(raw).map_err(|_| UserError::invalid(format!("{field}: must be a UUID")))
}

/// The role of a request. `ROLE_UNSPECIFIED` yields `None`; a number that is
/// no role at all is refused.
pub fn role_from_proto(raw: i32) -> Result<Option<Role>, UserError> {
    match auth_pb::Role::try_from(raw) {
        Ok(auth_pb::Role::Unspecified) => Ok(None),
        Ok(auth_pb::Role::Customer) => Ok(Some(Role::Customer)),
        Ok(auth_pb::Role::Admin) => Ok(Some(Role::Admin)),
        Err(_) => Err(UserError::invalid(
            "role: unknown role; use ROLE_CUSTOMER or ROLE_ADMIN",
        )),
    }
}

pub fn role_to_proto(raw: &str) -> auth_pb::Role {
    match raw.parse::<Role>() {
        Ok(Role::Customer) => auth_pb::Role::Customer,
        Ok(Role::Admin) => auth_pb::Role::Admin,
        // The CHECK constraint admits nothing else.
        Err(_) => auth_pb::Role::Unspecified,
    }
}

pub fn name(field: &str, raw: &str) -> Result<String, UserError> {
    validate::name(raw).map_err(|e| UserError::invalid(format!("{field}: {e}")))
}

pub fn email(field: &str, raw: &str) -> Result<String, UserError> {
    validate::email(raw).map_err(|e| UserError::invalid(format!("{field}: {e}")))
}

/// An E.164 number: `+`, then 8 to 15 digits of which the first is not 0.
/// Empty means "no phone number".
pub fn phone(field: &str, raw: &str) -> Result<Option<String>, UserError> {
    if raw.is_empty() {
        return Ok(None);
    }
    let valid = raw.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    });
    if valid {
        Ok(Some(raw.to_owned()))
    } else {
        Err(UserError::invalid(format!(
            "{field}: must be an E.164 number, a + then 8 to 15 digits without spaces, e.g. +4915112345678"
        )))
    }
}

/// A BCP 47 language tag of language, optional script, optional region and
/// optional variants (`en`, `en-GB`, `pt-BR`, `zh-Hant-TW`, `sl-rozaj`),
/// returned in canonical case. Extensions and private-use tags are refused:
/// nothing renders them.
pub fn locale(field: &str, raw: &str) -> Result<String, UserError> {
    let bad = || {
        UserError::invalid(format!(
            "{field}: must be a BCP 47 language tag such as \"en\", \"en-GB\" or \"pt-BR\""
        ))
    };
    if raw.is_empty() || raw.len() > LOCALE_MAX_CHARS {
        return Err(bad());
    }
    let alpha = |s: &str| s.bytes().all(|b| b.is_ascii_alphabetic());
    let mut subtags = raw.split('-').peekable();
    let language = subtags.next().ok_or_else(bad)?;
    if !((2..=3).contains(&language.len()) && alpha(language)) {
        return Err(bad());
    }
    let mut tag = language.to_ascii_lowercase();
    if let Some(script) = subtags.next_if(|s| s.len() == 4 && alpha(s)) {
        tag.push('-');
        tag.push_str(&script[..1].to_ascii_uppercase());
        tag.push_str(&script[1..].to_ascii_lowercase());
    }
    if let Some(region) = subtags.next_if(|s| {
        (s.len() == 2 && alpha(s)) || (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
    }) {
        tag.push('-');
        tag.push_str(&region.to_ascii_uppercase());
    }
    for variant in subtags {
        let alnum = variant.bytes().all(|b| b.is_ascii_alphanumeric());
        let valid = alnum
            && ((5..=8).contains(&variant.len())
                || (variant.len() == 4 && variant.as_bytes()[0].is_ascii_digit()));
        if !valid {
            return Err(bad());
        }
        tag.push('-');
        tag.push_str(&variant.to_ascii_lowercase());
    }
    Ok(tag)
}

/// A free-text address field, trimmed: at most `max` characters and no
/// control characters; empty is refused when `required`.
fn text(field: &str, raw: &str, required: bool, max: usize) -> Result<String, UserError> {
    if raw.chars().any(char::is_control) {
        return Err(UserError::invalid(format!(
            "{field}: must not contain control characters"
        )));
    }
    let value = raw.trim();
    if required && value.is_empty() {
        return Err(UserError::invalid(format!("{field}: is required")));
    }
    if value.chars().count() > max {
        return Err(UserError::invalid(format!(
            "{field}: must be at most {max} characters"
        )));
    }
    Ok(value.to_owned())
}

/// The fields of a postal address, validated and normalised.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostalFields {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
}

impl PostalFields {
    /// Validates every field; `prefix` names where the fields sit in the
    /// request (`postal_address.` or nothing) so errors name the field.
    pub fn validate(self, prefix: &str) -> Result<Self, UserError> {
        let field = |name: &str| format!("{prefix}{name}");
        let name = if self.name.trim().is_empty() {
            String::new()
        } else {
            self::name(&field("name"), &self.name)?
        };
        let postal_code = self.postal_code.trim();
        let ends_alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if postal_code.chars().count() > POSTAL_CODE_MAX_CHARS
            || !ends_alphanumeric(postal_code.chars().next())
            || !ends_alphanumeric(postal_code.chars().last())
            || !postal_code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
        {
            return Err(UserError::invalid(format!(
                "{}: must be 1 to {POSTAL_CODE_MAX_CHARS} letters, digits, spaces and hyphens, \
                 starting and ending with a letter or digit",
                field("postal_code")
            )));
        }
        let country = self.country.trim().to_ascii_uppercase();
        if !country::is_code(&country) {
            return Err(UserError::invalid(format!(
                "{}: {:?} is not an ISO 3166-1 alpha-2 country code such as \"DE\"",
                field("country"),
                self.country
            )));
        }
        Ok(Self {
            name,
            line1: text(&field("line1"), &self.line1, true, LINE_MAX_CHARS)?,
            line2: text(&field("line2"), &self.line2, false, LINE_MAX_CHARS)?,
            city: text(&field("city"), &self.city, true, CITY_MAX_CHARS)?,
            region: text(&field("region"), &self.region, false, REGION_MAX_CHARS)?,
            postal_code: postal_code.to_owned(),
            country,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> PostalFields {
        PostalFields {
            name: "Ada Lovelace".to_owned(),
            line1: "1 Analytical Row".to_owned(),
            line2: String::new(),
            city: "London".to_owned(),
            region: String::new(),
            postal_code: "N1 9GU".to_owned(),
            country: "GB".to_owned(),
        }
    }

    fn message(error: UserError) -> String {
        error.to_string()
    }

    #[test]
    fn e164_numbers_are_accepted_and_anything_else_is_refused() {
        assert_eq!(phone("phone", "").expect("empty"), None);
        for good in [
            "+4915112345678",
            "+12025550123",
            "+12345678",
            "+123456789012345",
        ] {
            assert_eq!(phone("phone", good).expect(good).as_deref(), Some(good));
        }
        for bad in [
            "4915112345678",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+49 151 12345678",
            "+49-151-12345678",
            "++4915112345678",
            "+49151a2345678",
            "+",
        ] {
            let error = phone("phone", bad).expect_err(bad);
            assert!(message(error).starts_with("phone: "), "{bad}");
        }
    }

    #[test]
    fn locales_are_bcp47_tags_in_canonical_case() {
        for (raw, canonical) in [
            ("en", "en"),
            ("en-GB", "en-GB"),
            ("pt-br", "pt-BR"),
            ("DE-de", "de-DE"),
            ("zh-hant-tw", "zh-Hant-TW"),
            ("es-419", "es-419"),
            ("sl-rozaj", "sl-rozaj"),
            ("de-CH-1996", "de-CH-1996"),
            ("fil", "fil"),
        ] {
            assert_eq!(locale("locale", raw).expect(raw), canonical);
        }
        for bad in [
            "", "e", "english", "en_GB", "en-", "-en", "en--GB", "en-GBR", "en-G", "12", "en-GB-x",
            "en-ä", "en GB",
        ] {
            let error = locale("locale", bad).expect_err(bad);
            assert!(message(error).starts_with("locale: "), "{bad}");
        }
    }

    #[test]
    fn a_valid_address_is_trimmed_and_its_country_upper_cased() {
        let raw = PostalFields {
            line1: "  1 Analytical Row ".to_owned(),
            country: "gb".to_owned(),
            ..address()
        };
        let clean = raw.validate("").expect("valid");
        assert_eq!(clean.line1, "1 Analytical Row");
        assert_eq!(clean.country, "GB");
    }

    #[test]
    fn each_malformed_address_field_is_named() {
        let cases = [
            (
                PostalFields {
                    line1: " ".to_owned(),
                    ..address()
                },
                "a.line1: ",
            ),
            (
                PostalFields {
                    line1: "x".repeat(201),
                    ..address()
                },
                "a.line1: ",
            ),
            (
                PostalFields {
                    line2: "x".repeat(201),
                    ..address()
                },
                "a.line2: ",
            ),
            (
                PostalFields {
                    city: String::new(),
                    ..address()
                },
                "a.city: ",
            ),
            (
                PostalFields {
                    city: "x".repeat(101),
                    ..address()
                },
                "a.city: ",
            ),
            (
                PostalFields {
                    region: "x".repeat(101),
                    ..address()
                },
                "a.region: ",
            ),
            (
                PostalFields {
                    name: "x".repeat(101),
                    ..address()
                },
                "a.name: ",
            ),
            (
                PostalFields {
                    postal_code: String::new(),
                    ..address()
                },
                "a.postal_code: ",
            ),
            (
                PostalFields {
                    postal_code: "N1_9GU".to_owned(),
                    ..address()
                },
                "a.postal_code: ",
            ),
            (
                PostalFields {
                    postal_code: "1".repeat(21),
                    ..address()
                },
                "a.postal_code: ",
            ),
            (
                PostalFields {
                    country: "UK".to_owned(),
                    ..address()
                },
                "a.country: ",
            ),
            (
                PostalFields {
                    country: "GBR".to_owned(),
                    ..address()
                },
                "a.country: ",
            ),
            (
                PostalFields {
                    country: String::new(),
                    ..address()
                },
                "a.country: ",
            ),
        ];
        for (fields, expected) in cases {
            let error = fields.clone().validate("a.").expect_err(expected);
            assert!(message(error).starts_with(expected), "{fields:?}");
        }
    }

    #[test]
    fn roles_map_both_ways_and_unknown_numbers_are_refused() {
        assert_eq!(role_from_proto(0).expect("unspecified"), None);
        assert_eq!(role_from_proto(2).expect("admin"), Some(Role::Admin));
        assert!(role_from_proto(9).is_err());
        assert_eq!(role_to_proto("customer"), auth_pb::Role::Customer);
        assert_eq!(role_to_proto("admin"), auth_pb::Role::Admin);
    }
}
