//! Secrets the operator generates: database and broker credentials and the
//! JWT signing key. They are described by pure data during the build and
//! filled with random values only when the controller finds them missing, so
//! that nothing is ever rotated by accident.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use rand::distributions::Alphanumeric;
use rand::{CryptoRng, Rng, RngCore};

use crate::meta::{Component, Owner, component_labels, instance_labels};
use crate::topology::Service;

/// Key of the database password in a credentials Secret.
pub const PASSWORD_KEY: &str = "password";
/// Key of the user name in a credentials Secret.
pub const USERNAME_KEY: &str = "username";
/// Key of the PEM-encoded Ed25519 private key.
pub const JWT_KEY: &str = "signing-key.pem";
/// The broker user of the built-in RabbitMQ.
pub const RABBITMQ_USER: &str = "gocommerce";
/// Length of generated passwords; alphanumeric so they need no escaping in
/// the URLs the pods compose from them.
const PASSWORD_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot encode the signing key: {0}")]
    Encode(String),
}

/// The random content of a generated Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// `username` (fixed) and `password` (random).
    Credentials { username: String },
    /// `signing-key.pem`: a fresh Ed25519 key, PKCS#8 PEM.
    SigningKey,
}

/// A Secret to create when missing, never to update.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedSecret {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub content: Generated,
}

impl GeneratedSecret {
    /// The Secret with fresh random values.
    pub fn materialize<R: RngCore + CryptoRng>(
        &self,
        owner: &Owner,
        rng: &mut R,
    ) -> Result<Secret, SecretError> {
        let data = match &self.content {
            Generated::Credentials { username } => BTreeMap::from([
                (
                    USERNAME_KEY.to_owned(),
                    ByteString(username.clone().into_bytes()),
                ),
                (
                    PASSWORD_KEY.to_owned(),
                    ByteString(password(rng).into_bytes()),
                ),
            ]),
            Generated::SigningKey => BTreeMap::from([(
                JWT_KEY.to_owned(),
                ByteString(signing_key_pem(rng)?.into_bytes()),
            )]),
        };
        Ok(Secret {
            metadata: owner.meta(self.name.clone(), self.labels.clone()),
            type_: Some("Opaque".to_owned()),
            data: Some(data),
            ..Secret::default()
        })
    }
}

/// A random alphanumeric password.
pub fn password<R: Rng>(rng: &mut R) -> String {
    rng.sample_iter(&Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// A new Ed25519 private key as PKCS#8 PEM, what `JWT_SIGNING_KEY` expects.
pub fn signing_key_pem<R: RngCore + CryptoRng>(rng: &mut R) -> Result<String, SecretError> {
    let key = SigningKey::generate(rng);
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|pem| pem.to_string())
        .map_err(|e| SecretError::Encode(e.to_string()))
}

/// Credentials of one service's database role.
pub fn database_secret(instance: &str, service: Service) -> GeneratedSecret {
    GeneratedSecret {
        name: database_secret_name(instance, service),
        labels: component_labels(instance, Component::Postgres(service)),
        content: Generated::Credentials {
            username: service.database(),
        },
    }
}

pub fn database_secret_name(instance: &str, service: Service) -> String {
    format!("{instance}-pg-{}", service.name())
}

/// The superuser of the shared PostgreSQL instance.
pub fn postgres_admin_secret(instance: &str) -> GeneratedSecret {
    GeneratedSecret {
        name: postgres_admin_secret_name(instance),
        labels: component_labels(instance, Component::SharedPostgres),
        content: Generated::Credentials {
            username: "postgres".to_owned(),
        },
    }
}

pub fn postgres_admin_secret_name(instance: &str) -> String {
    format!("{instance}-pg-admin")
}

/// The built-in broker's user.
pub fn rabbitmq_secret(instance: &str) -> GeneratedSecret {
    GeneratedSecret {
        name: rabbitmq_secret_name(instance),
        labels: component_labels(instance, Component::RabbitMq),
        content: Generated::Credentials {
            username: RABBITMQ_USER.to_owned(),
        },
    }
}

pub fn rabbitmq_secret_name(instance: &str) -> String {
    format!("{instance}-rabbitmq")
}

/// The key auth signs tokens with; shared by every auth replica.
pub fn jwt_secret(instance: &str) -> GeneratedSecret {
    GeneratedSecret {
        name: jwt_secret_name(instance),
        labels: instance_labels(instance),
        content: Generated::SigningKey,
    }
}

pub fn jwt_secret_name(instance: &str) -> String {
    format!("{instance}-jwt")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn signing_key_is_a_pkcs8_ed25519_pem() {
        let pem = signing_key_pem(&mut StdRng::seed_from_u64(7)).expect("encodes");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        SigningKey::from_pkcs8_pem(&pem).expect("decodes as Ed25519 PKCS#8");
    }

    #[test]
    fn passwords_are_long_random_and_url_safe() {
        let mut rng = StdRng::seed_from_u64(1);
        let a = password(&mut rng);
        let b = password(&mut rng);
        assert_eq!(a.len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
