//! What every store accepts and how it names what it creates: the same for each backend,
//! so that moving from SQLite to PostgreSQL changes nothing a client can see.

use crate::{now, random_token, StoreError, Tenant};

/// Tenant names are 1-64 letters, digits, `-` or `_` (they appear in URLs and metrics).
pub(crate) fn tenant_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StoreError::Invalid(
            "tenant names are 1-64 letters, digits, `-` or `_`".into(),
        ));
    }
    Ok(name)
}

pub(crate) fn weight(weight: u32) -> Result<u32, StoreError> {
    if weight == 0 || weight > 1000 {
        return Err(StoreError::Invalid("weight must be 1-1000".into()));
    }
    Ok(weight)
}

pub(crate) fn tenant_status(status: &str) -> Result<&str, StoreError> {
    match status {
        "active" | "suspended" => Ok(status),
        _ => Err(StoreError::Invalid("status is active or suspended".into())),
    }
}

pub(crate) fn key_name(name: &str) -> Result<&str, StoreError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(
            "key names are 1-100 characters, none of them control characters".into(),
        ));
    }
    Ok(name)
}

/// A new, active tenant, its name and weight checked.
pub(crate) fn new_tenant(name: &str, weight: u32) -> Result<Tenant, StoreError> {
    Ok(Tenant {
        id: format!("tnt_{}", random_token(16)?),
        name: tenant_name(name)?.to_string(),
        status: "active".into(),
        weight: self::weight(weight)?,
        log_invocations: false,
        enforced_guardrail: None,
        created_at: now(),
    })
}

/// A new API key: (its id, the key itself).
pub(crate) fn new_api_key() -> Result<(String, String), StoreError> {
    Ok((
        format!("key_{}", random_token(12)?),
        format!("bsk-{}", random_token(40)?),
    ))
}

/// A new SigV4 key pair: (access key id, secret).
pub(crate) fn new_access_key() -> Result<(String, String), StoreError> {
    Ok((
        format!("BSAK{}", random_token(16)?.to_ascii_uppercase()),
        random_token(40)?,
    ))
}

pub(crate) fn new_guardrail_id() -> Result<String, StoreError> {
    Ok(random_token(12)?.to_ascii_lowercase())
}
