//! Tracing set-up shared by the binaries: `RUST_LOG` filters, text or JSON lines on stderr.

use tracing_subscriber::{filter::Directive, EnvFilter};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Dependencies' log targets that print secrets at their most verbose levels, and the
/// level they are held to whatever `RUST_LOG` says: tungstenite traces the handshake
/// request (`Authorization: Bearer <stream token>`) and every frame's payload (the MQTT
/// CONNECT carries the device's SAS token).
const CAPS: &[&str] = &["tungstenite=debug", "tokio_tungstenite=debug"];

/// `RUST_LOG` (or `default` without it), with the caps above applied on top.
pub fn filter(default: &str) -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    for cap in CAPS {
        if let Ok(directive) = cap.parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber. Logs go to stderr, so `--stdio` mode keeps stdout for data.
pub fn init(format: LogFormat, default_filter: &str) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(default_filter))
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
