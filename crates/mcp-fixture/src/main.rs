//! `voidbox-mcp-fixture`: a tiny MCP server on stdin/stdout, uploaded into
//! a guest by void-box's MCP tests. Tools: `add`, `shout`, and `fail` (which
//! always returns an error result). `tools/list` answers in pages of two, so
//! clients must follow the cursor.

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, ListToolsResult, PaginatedRequestParams,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};

/// Tools per `tools/list` page: fewer than there are tools, so listing
/// needs more than one page.
const PAGE_SIZE: usize = 2;

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct AddArgs {
    /// First addend.
    a: f64,
    /// Second addend.
    b: f64,
}

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct ShoutArgs {
    /// Text to upper-case.
    text: String,
}

#[derive(Debug, Clone, Default)]
struct Fixture;

#[tool_router]
impl Fixture {
    #[tool(description = "Adds two numbers")]
    fn add(&self, Parameters(AddArgs { a, b }): Parameters<AddArgs>) -> String {
        // f64's Display prints integral values without a fraction: 3+4 is "7".
        (a + b).to_string()
    }

    #[tool(description = "Returns the text in upper case")]
    fn shout(&self, Parameters(ShoutArgs { text }): Parameters<ShoutArgs>) -> String {
        text.to_uppercase()
    }

    #[tool(description = "Always fails, with an error result")]
    fn fail(&self) -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("this tool always fails")])
    }
}

#[tool_handler]
impl ServerHandler for Fixture {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build()).with_server_info(
            Implementation::new("voidbox-mcp-fixture", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = Self::tool_router().list_all();
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        let start = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(cursor) => cursor
                .parse::<usize>()
                .ok()
                .filter(|&i| i <= tools.len())
                .ok_or_else(|| ErrorData::invalid_params("bad cursor", None))?,
        };
        let end = (start + PAGE_SIZE).min(tools.len());
        let mut page = ListToolsResult::with_all_items(tools[start..end].to_vec());
        page.next_cursor = (end < tools.len()).then(|| end.to_string());
        Ok(page)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let run = async {
        let service = Fixture.serve(rmcp::transport::stdio()).await?;
        service.waiting().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    match run.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("voidbox-mcp-fixture: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
