//! Checks of `[store] uri` and `database` at load time: the MongoDB store's
//! own rules in a build with the `mongo` feature; without it, `kind =
//! "mongo"` is refused by `backends.rs` with how to rebuild.

/// Checks a URI without connecting; the message never shows the password.
#[cfg(feature = "mongo")]
pub fn check(uri: &str) -> Result<(), String> {
    flow_store_mongo::validate_uri(uri)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "mongo"))]
pub fn check(_uri: &str) -> Result<(), String> {
    Ok(())
}

/// Checks a database name.
#[cfg(feature = "mongo")]
pub fn check_database(name: &str) -> Result<(), String> {
    flow_store_mongo::validate_database(name).map_err(|e| e.to_string())
}

#[cfg(not(feature = "mongo"))]
pub fn check_database(_name: &str) -> Result<(), String> {
    Ok(())
}
