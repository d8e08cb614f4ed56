//! Validated inputs of the auth service, built on the platform's shared rules
//! so the gateway and the service never disagree.

use gocommerce_platform::validate;

use crate::error::AuthError;

fn invalid(field: &str) -> impl Fn(String) -> AuthError + '_ {
    move |why| AuthError::InvalidArgument(format!("{field}: {why}"))
}

/// A trimmed, lower-cased, well-formed email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        validate::email(raw).map(Self).map_err(invalid("email"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password of 8 to 128 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        Self::parse_field(raw, "password")
    }

    /// Like [`Password::parse`], naming `field` when the password is refused.
    pub fn parse_field(raw: &str, field: &str) -> Result<Self, AuthError> {
        validate::password(raw).map_err(invalid(field))?;
        Ok(Self(raw.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A display name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(raw: &str) -> Result<Self, AuthError> {
        validate::name(raw).map(Self).map_err(invalid("name"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
