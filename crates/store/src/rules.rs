//! What every store accepts and how it names what it creates: the same for each backend,
//! so that moving from SQLite to PostgreSQL changes nothing a client can see.

use crate::{
    now, random_token, AccessKeyInfo, ApiKeyInfo, CreatedAccessKey, CreatedApiKey, StoreError,
    Tenant,
};

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

/// A new API key of a tenant, its name checked: the only time the key itself exists
/// outside its hash.
pub(crate) fn new_api_key(
    tenant_id: &str,
    name: &str,
    expires_at: Option<i64>,
) -> Result<CreatedApiKey, StoreError> {
    Ok(CreatedApiKey {
        info: ApiKeyInfo {
            id: format!("key_{}", random_token(12)?),
            tenant_id: tenant_id.to_string(),
            name: key_name(name)?.to_string(),
            created_at: now(),
            expires_at,
            revoked_at: None,
        },
        key: format!("bsk-{}", random_token(40)?),
    })
}

/// A new SigV4 key pair of a tenant.
pub(crate) fn new_access_key(tenant_id: &str) -> Result<CreatedAccessKey, StoreError> {
    Ok(CreatedAccessKey {
        info: AccessKeyInfo {
            access_key_id: format!("BSAK{}", random_token(16)?.to_ascii_uppercase()),
            tenant_id: tenant_id.to_string(),
            created_at: now(),
            revoked_at: None,
        },
        secret_access_key: random_token(40)?,
    })
}

pub(crate) fn new_guardrail_id() -> Result<String, StoreError> {
    Ok(random_token(12)?.to_ascii_lowercase())
}
