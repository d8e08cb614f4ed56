//! Seeding through the REST API, as a shop would be filled: categories and
//! an NDJSON product import by the bootstrap admin, then registered
//! customers, some of them logged in with a shipping address.

use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::server::{ADMIN_EMAIL, ADMIN_PASSWORD};

/// Words product names are built from; searches look for one of the nouns,
/// which each match about one product in twenty.
pub const NOUNS: [&str; 20] = [
    "lamp", "chair", "kettle", "blanket", "backpack", "guitar", "camera", "teapot", "jacket",
    "wallet", "candle", "mirror", "helmet", "blender", "scarf", "notebook", "umbrella", "pillow",
    "skillet", "compass",
];
const ADJECTIVES: [&str; 10] = [
    "vintage", "compact", "sturdy", "elegant", "rustic", "modern", "classic", "bright", "silent",
    "portable",
];
pub const CUSTOMER_PASSWORD: &str = "bench-customer-password";

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub categories: usize,
    pub products: usize,
    pub customers: usize,
    /// Customers that log in and get an address (order and profile loads).
    pub active: usize,
}

/// A logged-in customer.
#[derive(Debug, Clone)]
pub struct Customer {
    pub token: String,
    pub address_id: String,
}

#[derive(Debug, Clone)]
pub struct Seeded {
    pub product_ids: Vec<String>,
    pub customers: Vec<Customer>,
    /// Every registered customer's email (all share one password).
    pub emails: Vec<String>,
}

pub fn email(index: usize) -> String {
    format!("customer-{index}@bench.test")
}

pub async fn json_ok(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("{what} answered {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("{what} answered no JSON: {body}"))
}

pub async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    let body = json_ok(response, "login").await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("login answered no access_token")
}

/// The body of `POST /v1/orders`: one `product_id` to the customer's
/// address, paid with the simulated card that succeeds.
pub fn order_body(customer: &Customer, product_id: &str) -> Value {
    json!({
        "items": [{"product_id": product_id, "quantity": 1}],
        "shipping_address_id": customer.address_id,
        "payment_method": "pm_card_ok",
    })
}

/// The NDJSON import body: `count` products spread over the categories,
/// with more stock than any run can sell.
pub fn import_body(count: usize, categories: usize) -> String {
    let mut body = String::new();
    for i in 0..count {
        let noun = NOUNS[i % NOUNS.len()];
        let adjective = ADJECTIVES[(i / NOUNS.len()) % ADJECTIVES.len()];
        let line = json!({
            "sku": format!("BENCH-{i:06}"),
            "name": format!("{adjective} {noun} {i}"),
            "description": format!("A {adjective} {noun} for the benchmark, number {i}."),
            "price": {"amount": 500 + (i as i64 * 37) % 20_000, "currency": "USD"},
            "category_slug": format!("bench-{}", i % categories.max(1)),
            "stock": 100_000_000,
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    body
}

pub async fn seed(client: &reqwest::Client, base: &str, sizes: Sizes) -> anyhow::Result<Seeded> {
    let admin_token = login(client, base, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    for c in 0..sizes.categories {
        let response = client
            .post(format!("{base}/v1/categories"))
            .bearer_auth(&admin_token)
            .json(&json!({"name": format!("Bench {c}"), "slug": format!("bench-{c}")}))
            .send()
            .await?;
        json_ok(response, "create category").await?;
    }
    let response = client
        .post(format!("{base}/v1/products/import"))
        .bearer_auth(&admin_token)
        .header("content-type", "application/x-ndjson")
        .timeout(Duration::from_secs(600))
        .body(import_body(sizes.products, sizes.categories))
        .send()
        .await?;
    let summary = json_ok(response, "product import").await?;
    if summary["rejected"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
    {
        bail!("the product import rejected lines: {summary}");
    }
    let product_ids = product_ids(client, base).await?;
    if product_ids.len() < sizes.products {
        bail!(
            "the catalog lists {} products, {} were imported",
            product_ids.len(),
            sizes.products
        );
    }

    // Registration hashes a password; a few at a time keep the server busy
    // without queueing past its two hashing slots by much.
    let registrations = futures::stream::iter(0..sizes.customers)
        .map(|i| {
            let client = client.clone();
            async move {
                let response = client
                    .post(format!("{base}/v1/auth/register"))
                    .json(&json!({"email": email(i), "password": CUSTOMER_PASSWORD, "name": format!("Customer {i}")}))
                    .send()
                    .await?;
                json_ok(response, "register").await.map(|_| ())
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<anyhow::Result<()>>>()
        .await;
    registrations
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;

    let active = futures::stream::iter(0..sizes.active.min(sizes.customers))
        .map(|i| {
            let client = client.clone();
            async move {
                let email = email(i);
                let token = login(&client, base, &email, CUSTOMER_PASSWORD).await?;
                let response = client
                    .post(format!("{base}/v1/users/me/addresses"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "name": format!("Customer {i}"), "line1": "1 Bench Street",
                        "city": "Springfield", "postal_code": "12345", "country": "US",
                        "is_default": true
                    }))
                    .send()
                    .await?;
                let address = json_ok(response, "create address").await?;
                let address_id = address["id"]
                    .as_str()
                    .context("address without id")?
                    .to_owned();
                Ok::<_, anyhow::Error>(Customer { token, address_id })
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    let customers = active.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Seeded {
        product_ids,
        customers,
        emails: (0..sizes.customers).map(email).collect(),
    })
}

/// Every active product's id, page by page.
async fn product_ids(client: &reqwest::Client, base: &str) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = client
            .get(format!("{base}/v1/products"))
            .query(&[("page_size", "100"), ("sort", "name")]);
        if let Some(token) = &token {
            request = request.query(&[("page_token", token)]);
        }
        let page = json_ok(request.send().await?, "product listing").await?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let Some(id) = item["id"].as_str() {
                ids.push(id.to_owned());
            }
        }
        match page["next_page_token"].as_str() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => return Ok(ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_import_body_is_one_valid_line_per_product_across_every_category() {
        let body = import_body(100, 5);
        let lines: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 100);
        let mut slugs: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["category_slug"].as_str())
            .collect();
        slugs.sort_unstable();
        slugs.dedup();
        assert_eq!(
            slugs,
            vec!["bench-0", "bench-1", "bench-2", "bench-3", "bench-4"]
        );
        assert!(
            lines
                .iter()
                .all(|l| l["price"]["amount"].as_i64().is_some_and(|a| a > 0))
        );
    }

    #[test]
    fn each_search_noun_names_a_twentieth_of_the_products() {
        let body = import_body(1000, 10);
        let lamps = body
            .lines()
            .filter(|l| l.contains("\"name\":\"") && l.contains(" lamp "))
            .count();
        assert_eq!(lamps, 50);
    }
}
