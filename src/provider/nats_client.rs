//! NATS connections shared by the providers that talk to NATS (streams, and the Mongo
//! provider's publishing of platform documents).

/// Credentials embedded in a server URL (`nats://user:pass@host`, `nats://token@host`) as
/// connect options: async-nats reads only its options and would connect unauthenticated.
pub fn with_url_credentials(
    options: async_nats::ConnectOptions,
    url: &str,
) -> async_nats::ConnectOptions {
    let first = url.split(',').next().unwrap_or_default().trim();
    let Ok(addr) = first.parse::<async_nats::ServerAddr>() else {
        return options;
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    match (addr.username(), addr.password()) {
        (Some(user), Some(pass)) => options.user_and_password(decode(user), decode(pass)),
        (Some(token), None) => {
            // A token is the whole secret; the URL's own registration only covers passwords.
            crate::redact::register(token);
            options.token(decode(token))
        }
        _ => options,
    }
}
