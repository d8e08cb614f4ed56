//! Input rules shared by the gateway, which checks them before any backend
//! call, and the services, which check them again. Messages name no field;
//! callers prefix the field.

/// Longest accepted email address (RFC 5321 path limit).
pub const EMAIL_MAX_CHARS: usize = 254;
pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const NAME_MAX_CHARS: usize = 100;

/// The OpenAPI `pattern` equivalent of [`name`]: at least one printable,
/// non-blank character and no control characters.
pub const NAME_PATTERN: &str =
    r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// Active ISO 4217 currency codes (alphabetic, upper case).
pub const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code such as `USD`; exact case.
pub fn currency(code: &str) -> Result<(), String> {
    if CURRENCIES.binary_search(&code).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{code:?} is not an ISO 4217 currency code such as \"USD\""
        ))
    }
}

/// A trimmed, lower-cased email address.
pub fn email(raw: &str) -> Result<String, String> {
    if raw.chars().count() > EMAIL_MAX_CHARS {
        return Err(format!("must be at most {EMAIL_MAX_CHARS} characters"));
    }
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must be an email address such as ada@example.com".to_owned());
    };
    let well_formed = !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email.chars().all(|c| !c.is_whitespace() && !c.is_control());
    if well_formed {
        Ok(email)
    } else {
        Err("must be an email address such as ada@example.com".to_owned())
    }
}

/// A password of 8 to 128 characters (Unicode scalar values, not bytes).
pub fn password(raw: &str) -> Result<(), String> {
    let chars = raw.chars().count();
    if chars < PASSWORD_MIN_CHARS {
        return Err(format!("must be at least {PASSWORD_MIN_CHARS} characters"));
    }
    if chars > PASSWORD_MAX_CHARS {
        return Err(format!("must be at most {PASSWORD_MAX_CHARS} characters"));
    }
    Ok(())
}

/// A display name: at most 100 characters, not blank, no control characters;
/// returned trimmed.
pub fn name(raw: &str) -> Result<String, String> {
    text(raw, NAME_MAX_CHARS, true, false)?;
    Ok(raw.trim().to_owned())
}

/// Free text of at most `max` characters without control characters (but
/// tabs and line breaks when `multiline`); when `required`, not blank either.
/// PostgreSQL's `text` cannot hold a NUL at all, so a NUL that got past this
/// would fail the statement.
pub fn text(raw: &str, max: usize, required: bool, multiline: bool) -> Result<(), String> {
    if raw.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if raw
        .chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err("must not contain control characters".to_owned());
    }
    if required && raw.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_are_iso_4217_codes_in_upper_case() {
        assert!(
            CURRENCIES.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary search"
        );
        assert!(currency("USD").is_ok());
        assert!(currency("EUR").is_ok());
        assert!(currency("usd").is_err());
        assert!(currency("XYZ").is_err());
        assert!(currency("").is_err());
    }

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        assert_eq!(
            email("  Ada@Example.COM ").as_deref(),
            Ok("ada@example.com")
        );
    }

    #[test]
    fn malformed_emails_are_refused() {
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@@example.com",
            "ada@example..com",
            "ada@.example.com",
        ] {
            assert!(email(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn passwords_are_counted_in_characters_not_bytes() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(
            password(&"é".repeat(128)).is_ok(),
            "128 two-byte characters"
        );
        assert!(password(&"a".repeat(129)).is_err());
    }

    #[test]
    fn names_must_be_present_and_printable() {
        assert!(name("   ").is_err());
        assert!(name("Ada\u{0}").is_err());
        assert_eq!(name(" Ada Lovelace ").as_deref(), Ok("Ada Lovelace"));
    }

    #[test]
    fn text_refuses_control_characters_and_keeps_line_breaks_only_when_multiline() {
        assert!(text("UPS", 100, true, false).is_ok());
        assert!(text("", 100, false, false).is_ok());
        assert!(text(" ", 100, true, false).is_err());
        assert!(text("1Z\u{0}99", 100, true, false).is_err());
        assert!(text("a\u{85}b", 100, false, true).is_err());
        assert!(text("two\nlines", 100, false, false).is_err());
        assert!(text("two\r\nlines\tand a tab", 100, false, true).is_ok());
        assert!(text("\u{0}", 100, false, true).is_err());
        assert!(text(&"é".repeat(100), 100, true, false).is_ok());
        assert!(text(&"é".repeat(101), 100, true, false).is_err());
    }
}
