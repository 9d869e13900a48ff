//! The five kinds as data: their names, where the platform keeps each (collection, Spring
//! `_class`), and the facts the engine needs about them.

use crate::kind::{Compare, KindInfo, System};

pub const TOOL: &str = "IntegratedTool";
pub const AGENT: &str = "ToolAgent";
pub const CLIENT: &str = "ClientConfiguration";
pub const RELEASE: &str = "ReleaseVersion";
pub const SECRET: &str = "RegistrationSecret";

/// Collections at the reference commit (openframe.md §6, §7, §8, §12).
pub const TOOLS_COLLECTION: &str = "integrated_tools";
pub const AGENTS_COLLECTION: &str = "integrated_tool_agents";
pub const CLIENT_COLLECTION: &str = "openframe_client_configuration";
pub const RELEASES_COLLECTION: &str = "release_versions";
pub const SECRETS_COLLECTION: &str = "agent_registration_secrets";

// Spring Data's `_class` type hints: the document classes under
// `com.openframe.data.document.{tool,toolagent,clientconfiguration,version,agent}` (openframe.md
// §0). The packages are from the source listing; the class names are an *inference* from the
// collection names and the services that use them (IntegratedToolService,
// IntegratedToolAgentService, OpenFrameClientConfigurationService, ReleaseVersionService,
// AgentRegistrationSecretManagementService). Spring reads a document whatever its `_class`
// when the type is known from the repository, so a wrong guess degrades nothing.
pub const TOOL_CLASS: &str = "com.openframe.data.document.tool.IntegratedTool";
pub const AGENT_CLASS: &str = "com.openframe.data.document.toolagent.IntegratedToolAgent";
pub const CLIENT_CLASS: &str =
    "com.openframe.data.document.clientconfiguration.OpenFrameClientConfiguration";
pub const RELEASE_CLASS: &str = "com.openframe.data.document.version.ReleaseVersion";
pub const SECRET_CLASS: &str = "com.openframe.data.document.agent.AgentRegistrationSecret";

/// The singletons' names: the client configuration's `_id` is always `default` (§8); the
/// release version and the secret have one document each, named in the manifest by convention.
pub const CLIENT_ID: &str = "default";
pub const RELEASE_NAME: &str = "cluster";

const fn kind(kind: &'static str, interpolate: bool) -> KindInfo {
    KindInfo {
        kind,
        system: System::Mongo,
        // The stored document is the whole manifest body: a field absent from the manifest is
        // removed (the platform's save is a full replace).
        compare: Compare::Exact,
        field_rules: &[],
        // Secrets are named by their keys (a tool's `credentials`, the connector configs'
        // passwords): the key rule every kind shares.
        sensitive: &[],
        interpolate_spec_file: interpolate,
    }
}

pub static KINDS: [KindInfo; 5] = [
    // Tool bodies carry hosts and credentials as placeholders to resolve. Credentials are
    // stored in clear by the platform (§15.7) and must never be printed. Secret values inside
    // the connector list (which diffs whole) are registered by key and masked wherever printed.
    kind(TOOL, true),
    // Agent and client files hold `${client.serverUrl}`-style strings that the device-side
    // client resolves: they are data, stored verbatim (openframe.md, Pitfalls).
    kind(AGENT, false),
    kind(CLIENT, false),
    kind(RELEASE, true),
    kind(SECRET, true),
];

/// The NATS provider's stream kind: publishing needs the platform's streams to exist first.
/// Another provider's kind is named, never imported (the registry test checks the name).
pub const STREAM_KIND: &str = "NatsStream";
