//! SearchProducts' request: filters, the effective sort, and the opaque page
//! token. The token is base64url of JSON holding the sort key of the last
//! item (with its id as the tie-breaker) and a fingerprint of the query, so a
//! token is refused for any other query or sort.
//!
//! Keyset pagination never repeats or skips a product that exists throughout
//! the paging, even when products are added between pages. For relevance the
//! key is (rank, id): `ts_rank` depends only on the product's own text and the
//! query, never on the rest of the catalog, so a product's rank is stable for
//! as long as the query (bound by the fingerprint) and the product's text are.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use gocommerce_platform::{page, validate};
use gocommerce_proto::product::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::db::ProductRow;
use crate::error::ProductError;
use crate::input::{self, CategoryRef};

pub const Q_MAX_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Relevance,
    PriceAsc,
    PriceDesc,
    Newest,
    Name,
}

impl Sort {
    fn as_str(self) -> &'static str {
        match self {
            Self::Relevance => "relevance",
            Self::PriceAsc => "price_asc",
            Self::PriceDesc => "price_desc",
            Self::Newest => "newest",
            Self::Name => "name",
        }
    }
}

/// The sort key of the last item of a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sort", rename_all = "snake_case")]
pub enum Cursor {
    /// The rank as its bit pattern, so it survives JSON exactly.
    Relevance {
        rank_bits: u32,
        id: Uuid,
    },
    PriceAsc {
        price: i64,
        id: Uuid,
    },
    PriceDesc {
        price: i64,
        id: Uuid,
    },
    /// created_at in microseconds, PostgreSQL's precision.
    Newest {
        at_micros: i64,
        id: Uuid,
    },
    /// The lower-cased name, as PostgreSQL lower-cased it.
    Name {
        name: String,
        id: Uuid,
    },
}

impl Cursor {
    fn sort(&self) -> Sort {
        match self {
            Self::Relevance { .. } => Sort::Relevance,
            Self::PriceAsc { .. } => Sort::PriceAsc,
            Self::PriceDesc { .. } => Sort::PriceDesc,
            Self::Newest { .. } => Sort::Newest,
            Self::Name { .. } => Sort::Name,
        }
    }

    /// Whether PostgreSQL takes the cursor's key: a token is made by a client
    /// as easily as by us, and a key PostgreSQL refuses (a time before its
    /// range, a NUL in a name) would be a server error, not a bad token.
    fn storable(&self) -> bool {
        match self {
            Self::Newest { at_micros, .. } => DateTime::from_timestamp_micros(*at_micros)
                .and_then(page::storable)
                .is_some(),
            Self::Name { name, .. } => !name.contains('\0'),
            Self::Relevance { .. } | Self::PriceAsc { .. } | Self::PriceDesc { .. } => true,
        }
    }

    pub fn after(sort: Sort, row: &ProductRow) -> Self {
        match sort {
            Sort::Relevance => Self::Relevance {
                rank_bits: row.rank.to_bits(),
                id: row.id,
            },
            Sort::PriceAsc => Self::PriceAsc {
                price: row.price,
                id: row.id,
            },
            Sort::PriceDesc => Self::PriceDesc {
                price: row.price,
                id: row.id,
            },
            Sort::Newest => Self::Newest {
                at_micros: row.created_at.timestamp_micros(),
                id: row.id,
            },
            Sort::Name => Self::Name {
                name: row.sort_name.clone(),
                id: row.id,
            },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Token {
    /// Fingerprint of the query and sort the token belongs to.
    fp: String,
    #[serde(flatten)]
    cursor: Cursor,
}

/// A validated search; the category is still a reference until resolved.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub category: Option<CategoryRef>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub currency: Option<String>,
    pub in_stock: Option<bool>,
    pub sort: Sort,
    pub include_archived: bool,
    pub page_size: u32,
    pub after: Option<Cursor>,
    fingerprint: String,
}

impl SearchQuery {
    pub fn parse(request: &pb::SearchProductsRequest, admin: bool) -> Result<Self, ProductError> {
        if request.q.chars().count() > Q_MAX_CHARS {
            return Err(ProductError::invalid(format!(
                "q: must be at most {Q_MAX_CHARS} characters"
            )));
        }
        if request.q.contains('\0') {
            return Err(ProductError::invalid("q: must not contain NUL characters"));
        }
        let q = Some(request.q.trim().to_owned()).filter(|q| !q.is_empty());
        let category = match &request.category {
            None => None,
            Some(pb::search_products_request::Category::CategoryId(id)) => {
                Some(CategoryRef::Id(input::uuid("category_id", id)?))
            }
            Some(pb::search_products_request::Category::CategorySlug(slug)) => {
                Some(CategoryRef::Slug(input::slug("category_slug", slug)?))
            }
        };
        let mut currency: Option<String> = None;
        let mut bound = |field: &str, money: Option<&gocommerce_proto::common::v1::Money>| {
            let Some(money) = money else {
                return Ok(None);
            };
            if money.amount < 0 {
                return Err(ProductError::invalid(format!(
                    "{field}.amount: must not be negative"
                )));
            }
            if !money.currency.is_empty() {
                validate::currency(&money.currency)
                    .map_err(|e| ProductError::invalid(format!("{field}.currency: {e}")))?;
                match &currency {
                    Some(other) if *other != money.currency => {
                        return Err(ProductError::invalid(format!(
                            "{field}.currency: min_price and max_price must share a currency"
                        )));
                    }
                    _ => currency = Some(money.currency.clone()),
                }
            }
            Ok(Some(money.amount))
        };
        let min_price = bound("min_price", request.min_price.as_ref())?;
        let max_price = bound("max_price", request.max_price.as_ref())?;
        if let (Some(min), Some(max)) = (min_price, max_price)
            && min > max
        {
            return Err(ProductError::invalid(
                "min_price: must not be above max_price",
            ));
        }
        let sort = match pb::ProductSort::try_from(request.sort) {
            Ok(pb::ProductSort::Unspecified | pb::ProductSort::Relevance) if q.is_some() => {
                Sort::Relevance
            }
            Ok(pb::ProductSort::Unspecified | pb::ProductSort::Relevance) => Sort::Newest,
            Ok(pb::ProductSort::PriceAsc) => Sort::PriceAsc,
            Ok(pb::ProductSort::PriceDesc) => Sort::PriceDesc,
            Ok(pb::ProductSort::Newest) => Sort::Newest,
            Ok(pb::ProductSort::Name) => Sort::Name,
            Err(_) => return Err(ProductError::invalid("sort: unknown sort")),
        };
        if request.include_archived && !admin {
            return Err(ProductError::invalid(
                "include_archived: only admins may see archived products",
            ));
        }
        let (page_size, token) = input::page(request.page.as_ref())?;

        let mut hasher = Sha256::new();
        for part in [
            q.as_deref().unwrap_or_default().to_owned(),
            format!("{category:?}"),
            format!("{min_price:?}/{max_price:?}/{currency:?}"),
            format!("{:?}", request.in_stock),
            sort.as_str().to_owned(),
            request.include_archived.to_string(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0x1f]);
        }
        let fingerprint = URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12]);
        let after = decode_token(&token, &fingerprint, sort)?;
        Ok(Self {
            q,
            category,
            min_price,
            max_price,
            currency,
            in_stock: request.in_stock,
            sort,
            include_archived: request.include_archived,
            page_size,
            after,
            fingerprint,
        })
    }

    /// The token of the page after `last`.
    pub fn next_token(&self, last: &ProductRow) -> String {
        let token = Token {
            fp: self.fingerprint.clone(),
            cursor: Cursor::after(self.sort, last),
        };
        // Serialising a struct of strings and integers cannot fail.
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }
}

fn decode_token(
    token: &str,
    fingerprint: &str,
    sort: Sort,
) -> Result<Option<Cursor>, ProductError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || {
        ProductError::invalid(
            "page.page_token: malformed; pass back the next_page_token of a previous page",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| malformed())?;
    let token: Token = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if !token.cursor.storable() {
        return Err(malformed());
    }
    if token.fp != fingerprint || token.cursor.sort() != sort {
        return Err(ProductError::invalid(
            "page.page_token: belongs to another query, filter or sort",
        ));
    }
    Ok(Some(token.cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(q: &str, token: &str) -> pb::SearchProductsRequest {
        pb::SearchProductsRequest {
            q: q.to_owned(),
            page: Some(gocommerce_proto::common::v1::PageRequest {
                page_size: 0,
                page_token: token.to_owned(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_token_round_trips_and_is_bound_to_its_query() {
        let query = SearchQuery::parse(&request("lamp", ""), false).expect("valid");
        assert_eq!(query.sort, Sort::Relevance);
        let token = Token {
            fp: query.fingerprint.clone(),
            cursor: Cursor::Relevance {
                rank_bits: 0.0607_f32.to_bits(),
                id: Uuid::nil(),
            },
        };
        let encoded = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("json"));

        let again = SearchQuery::parse(&request("lamp", &encoded), false).expect("same query");
        assert_eq!(again.after, Some(token.cursor));
        assert!(SearchQuery::parse(&request("chair", &encoded), false).is_err());
        assert!(SearchQuery::parse(&request("lamp", "garbage!"), false).is_err());
    }

    #[test]
    fn a_token_whose_key_postgres_would_refuse_is_malformed() {
        let query = SearchQuery::parse(&request("", ""), false).expect("valid");
        let forged = |cursor: Cursor| {
            let token = Token {
                fp: query.fingerprint.clone(),
                cursor,
            };
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).expect("json"))
        };
        let ancient = forged(Cursor::Newest {
            at_micros: -300_000_000_000_000_000,
            id: Uuid::nil(),
        });
        let recent = forged(Cursor::Newest {
            at_micros: 1_700_000_000_000_000,
            id: Uuid::nil(),
        });

        let by_name = pb::SearchProductsRequest {
            sort: pb::ProductSort::Name.into(),
            ..request("", "")
        };
        let by_name_fp = SearchQuery::parse(&by_name, false)
            .expect("valid")
            .fingerprint;
        let nul = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Token {
                fp: by_name_fp,
                cursor: Cursor::Name {
                    name: "a\0b".to_owned(),
                    id: Uuid::nil(),
                },
            })
            .expect("json"),
        );
        let nul_request = pb::SearchProductsRequest {
            page: request("", &nul).page,
            ..by_name
        };

        let refused = SearchQuery::parse(&request("", &ancient), false);
        let taken = SearchQuery::parse(&request("", &recent), false);
        let refused_name = SearchQuery::parse(&nul_request, false);

        assert!(
            matches!(refused, Err(ProductError::InvalidArgument(m)) if m.contains("malformed"))
        );
        assert!(taken.is_ok());
        assert!(
            matches!(refused_name, Err(ProductError::InvalidArgument(m)) if m.contains("malformed"))
        );
    }

    #[test]
    fn without_text_relevance_means_newest() {
        let query = SearchQuery::parse(&request("  ", ""), false).expect("valid");
        assert_eq!(query.sort, Sort::Newest);
        assert_eq!(query.q, None);
    }
}
