//! Validation of request fields. Every error names the field it is about, as
//! `field: what is wrong`, and is INVALID_ARGUMENT.

use gocommerce_platform::validate;
use gocommerce_proto::common::v1::{Money, PageRequest};
use gocommerce_proto::product::v1 as pb;
use uuid::Uuid;

use crate::error::ProductError;

pub const SKU_MAX_CHARS: usize = 64;
pub const PRODUCT_NAME_MAX_CHARS: usize = 200;
pub const DESCRIPTION_MAX_CHARS: usize = 10_000;
pub const SLUG_MAX_CHARS: usize = 100;
pub const MAX_IMAGES: usize = 20;
pub const URL_MAX_CHARS: usize = 2048;
pub const REASON_MAX_CHARS: usize = 500;
/// Attributes are a product's facts (colour, size, material), not documents:
/// a bound keeps a page of 100 products well within a gRPC message.
pub const ATTRIBUTES_MAX_BYTES: usize = 16 * 1024;
pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

fn invalid(field: &str, message: impl std::fmt::Display) -> ProductError {
    ProductError::InvalidArgument(format!("{field}: {message}"))
}

pub fn uuid(field: &str, raw: &str) -> Result<Uuid, ProductError> {
    Uuid::parse_str(raw).map_err(|_| invalid(field, "must be a UUID"))
}

/// An optional UUID: empty means none.
pub fn optional_uuid(field: &str, raw: &str) -> Result<Option<Uuid>, ProductError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        uuid(field, raw).map(Some)
    }
}

pub fn category_name(raw: &str) -> Result<String, ProductError> {
    validate::name(raw).map_err(|e| invalid("name", e))
}

pub fn slug(field: &str, raw: &str) -> Result<String, ProductError> {
    let well_formed = !raw.is_empty()
        && raw.chars().count() <= SLUG_MAX_CHARS
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if well_formed {
        Ok(raw.to_owned())
    } else {
        Err(invalid(
            field,
            format!("must be 1 to {SLUG_MAX_CHARS} lower-case letters, digits and hyphens"),
        ))
    }
}

/// Trimmed text of 1 to `max` characters without control characters.
fn line(field: &str, raw: &str, max: usize) -> Result<String, ProductError> {
    if raw.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    let text = raw.trim();
    if text.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if text.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    Ok(text.to_owned())
}

pub fn sku(raw: &str) -> Result<String, ProductError> {
    line("sku", raw, SKU_MAX_CHARS)
}

pub fn product_name(raw: &str) -> Result<String, ProductError> {
    line("name", raw, PRODUCT_NAME_MAX_CHARS)
}

pub fn description(raw: &str) -> Result<String, ProductError> {
    if raw.contains('\0') {
        return Err(invalid("description", "must not contain NUL characters"));
    }
    if raw.chars().count() > DESCRIPTION_MAX_CHARS {
        return Err(invalid(
            "description",
            format!("must be at most {DESCRIPTION_MAX_CHARS} characters"),
        ));
    }
    Ok(raw.to_owned())
}

/// A price: present, not negative, in an ISO 4217 currency.
pub fn price(field: &str, money: Option<&Money>) -> Result<(i64, String), ProductError> {
    let money = money.ok_or_else(|| invalid(field, "is required"))?;
    if money.amount < 0 {
        return Err(invalid(&format!("{field}.amount"), "must not be negative"));
    }
    validate::currency(&money.currency).map_err(|e| invalid(&format!("{field}.currency"), e))?;
    Ok((money.amount, money.currency.clone()))
}

/// A JSON object as text ("{}" when empty), checked to be storable as jsonb.
pub fn attributes(raw: &str) -> Result<String, ProductError> {
    const FIELD: &str = "attributes_json";
    if raw.trim().is_empty() {
        return Ok("{}".to_owned());
    }
    if raw.len() > ATTRIBUTES_MAX_BYTES {
        return Err(invalid(
            FIELD,
            format!("must be at most {ATTRIBUTES_MAX_BYTES} bytes of JSON"),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| invalid(FIELD, format!("not valid JSON ({e})")))?;
    if !value.is_object() {
        return Err(invalid(FIELD, "must be a JSON object"));
    }
    // PostgreSQL's jsonb cannot hold a NUL character in any string.
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => {
                map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
            }
            _ => false,
        }
    }
    if has_nul(&value) {
        return Err(invalid(FIELD, "strings must not contain NUL characters"));
    }
    Ok(raw.to_owned())
}

/// Absolute http(s) URLs with a host, at most 20.
pub fn images(urls: &[String]) -> Result<Vec<String>, ProductError> {
    if urls.len() > MAX_IMAGES {
        return Err(invalid("images", format!("at most {MAX_IMAGES} URLs")));
    }
    urls.iter()
        .enumerate()
        .map(|(index, url)| {
            image_url(url)
                .map(|()| url.clone())
                .map_err(|e| invalid(&format!("images[{index}]"), e))
        })
        .collect()
}

fn image_url(url: &str) -> Result<(), String> {
    if url.chars().count() > URL_MAX_CHARS {
        return Err(format!("must be at most {URL_MAX_CHARS} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".to_owned());
    }
    let scheme_end = url
        .find("://")
        .ok_or("must be an absolute http or https URL")?;
    let scheme = url[..scheme_end].to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("must be an absolute http or https URL".to_owned());
    }
    let rest = &url[scheme_end + 3..];
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    if host.is_empty() && !authority.starts_with('[') {
        return Err("must name a host".to_owned());
    }
    Ok(())
}

/// How a product names its category.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CategoryRef {
    Id(Uuid),
    Slug(String),
}

impl CategoryRef {
    pub fn describe(&self) -> String {
        match self {
            Self::Id(id) => format!("category_id: no category {id}"),
            Self::Slug(slug) => format!("category_slug: no category with slug {slug:?}"),
        }
    }
}

pub fn product_category(
    category: Option<&pb::product_input::Category>,
) -> Result<CategoryRef, ProductError> {
    match category {
        None => Err(invalid("category_id", "is required (or category_slug)")),
        Some(pb::product_input::Category::CategoryId(id)) => {
            uuid("category_id", id).map(CategoryRef::Id)
        }
        Some(pb::product_input::Category::CategorySlug(s)) => {
            slug("category_slug", s).map(CategoryRef::Slug)
        }
    }
}

/// A product as written by CreateProduct and ImportProducts.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: String,
    pub category: CategoryRef,
    pub attributes: String,
    pub images: Vec<String>,
    pub stock: i64,
    pub active: bool,
}

pub fn product(input: &pb::ProductInput) -> Result<NewProduct, ProductError> {
    let sku = sku(&input.sku)?;
    let name = product_name(&input.name)?;
    let description = description(&input.description)?;
    let (price, currency) = price("price", input.price.as_ref())?;
    let category = product_category(input.category.as_ref())?;
    let attributes = attributes(&input.attributes_json)?;
    let images = images(&input.images)?;
    if input.stock < 0 {
        return Err(invalid("stock", "must not be negative"));
    }
    Ok(NewProduct {
        sku,
        name,
        description,
        price,
        currency,
        category,
        attributes,
        images,
        stock: input.stock,
        active: !input.archived,
    })
}

/// The page size (default 20, at most 100) and the token of a page request.
pub fn page(page: Option<&PageRequest>) -> Result<(u32, String), ProductError> {
    let page = page.cloned().unwrap_or_default();
    let size = match page.page_size {
        0 => DEFAULT_PAGE_SIZE,
        size if size > MAX_PAGE_SIZE => {
            return Err(invalid(
                "page.page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        size => size,
    };
    Ok((size, page.page_token))
}

/// An admin's reason for a stock adjustment: 1 to 500 characters.
pub fn reason(raw: &str) -> Result<String, ProductError> {
    line("reason", raw, REASON_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_must_be_absolute_http_or_https() {
        for good in [
            "https://cdn.example.com/a.png",
            "http://example.com",
            "https://example.com:8443/x?y=1#z",
        ] {
            assert!(image_url(good).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.com/a.png",
            "/relative.png",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "javascript:alert(1)",
        ] {
            assert!(image_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attributes_must_be_a_json_object() {
        assert_eq!(attributes("").expect("empty"), "{}");
        assert!(attributes(r#"{"size": 42, "tags": ["a"]}"#).is_ok());
        assert!(attributes("[1, 2]").is_err());
        assert!(attributes("{").is_err());
        assert!(attributes(r#"{"a": "\u0000"}"#).is_err());
    }

    #[test]
    fn attributes_are_bounded_in_size() {
        let at_most = format!(r#"{{"a": "{}"}}"#, "x".repeat(ATTRIBUTES_MAX_BYTES - 9));
        let over = format!(r#"{{"a": "{}"}}"#, "x".repeat(ATTRIBUTES_MAX_BYTES - 8));

        assert!(attributes(&at_most).is_ok());
        assert!(attributes(&over).is_err());
    }

    #[test]
    fn slugs_are_lower_case_letters_digits_and_hyphens() {
        assert!(slug("slug", "board-games-2").is_ok());
        for bad in ["", "Board", "a b", "a_b", "é"] {
            assert!(slug("slug", bad).is_err(), "{bad:?}");
        }
        assert!(slug("slug", &"a".repeat(101)).is_err());
    }

    #[test]
    fn page_sizes_default_to_twenty_and_stop_at_a_hundred() {
        assert_eq!(page(None).expect("default").0, 20);
        let over = PageRequest {
            page_size: 101,
            page_token: String::new(),
        };
        assert!(page(Some(&over)).is_err());
    }
}
