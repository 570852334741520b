//! The API's OpenAPI document, made from the handlers' own annotations;
//! `docs/openapi.json` holds it, and a test checks the two agree.

use utoipa::OpenApi;

use crate::api;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "voidbox serve",
        description = "Runs of specs, agent sessions, and sandboxes (micro-VMs), over HTTP. Every route but /v1/health needs `Authorization: Bearer TOKEN` when the daemon has a token."
    ),
    paths(
        api::health::health,
        api::health::metrics,
        api::health::openapi,
        api::runs::submit,
        api::runs::list,
        api::runs::get,
        api::runs::cancel,
        api::runs::events,
        api::runs::stage_output,
        api::sandboxes::create,
        api::sandboxes::list,
        api::sandboxes::get,
        api::sandboxes::delete,
        api::sandboxes::set_timeout,
        api::exec::run,
        api::exec::stream,
        api::exec::stdin,
        api::exec::kill,
        api::files::read,
        api::files::write,
        api::files::stat,
        api::files::list,
        api::files::mkdir,
        api::files::remove,
        api::files::rename,
        api::sessions::create,
        api::sessions::list,
        api::sessions::get,
        api::sessions::destroy,
        api::sessions::generate,
        api::sessions::generate_object,
        api::sessions::stream,
        api::sessions::history,
        api::sessions::context,
        api::sessions::clear,
        api::sessions::compact,
        api::sessions::cancel,
        api::sessions::confirm,
    )
)]
struct Doc;

/// The document, pretty-printed JSON.
pub fn document() -> String {
    Doc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is this document; `VOIDBOX_WRITE_OPENAPI=1`
    /// writes it anew after a change to the API.
    #[test]
    fn the_document_in_the_repository_is_the_one_served() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let now = super::document() + "\n";
        if std::env::var_os("VOIDBOX_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            kept == now,
            "docs/openapi.json is not the API's document: run `VOIDBOX_WRITE_OPENAPI=1 cargo test -p voidbox-server openapi`"
        );
    }
}
