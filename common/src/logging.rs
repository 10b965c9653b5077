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

/// Dependencies' log targets that warn about what a remote peer did, once per connection,
/// with nothing for an operator to act on: rustls warns whenever a client sends an IP
/// address as its TLS server name (SNI), which OpenSSL-based clients, Microsoft's C SDK
/// among them, do whenever they dial a hub by its IP. They are heard only at `debug`.
const QUIET: &[&str] = &["rustls::msgs::handshake=off"];

/// `RUST_LOG` (or `default` without it), with the caps above applied on top.
pub fn filter(default: &str) -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    quieted(capped(filter))
}

fn quieted(mut filter: EnvFilter) -> EnvFilter {
    // `off` only ever narrows: a filter quieter than warn is not widened by it.
    let wants_debug = filter
        .max_level_hint()
        .is_none_or(|hint| hint >= tracing_subscriber::filter::LevelFilter::DEBUG);
    if wants_debug {
        return filter;
    }
    for quiet in QUIET {
        if let Ok(directive) = quiet.parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

fn capped(mut filter: EnvFilter) -> EnvFilter {
    // A cap is itself a directive that enables its target up to that level, so it is only
    // added when something asks for trace: otherwise it would turn on tungstenite's debug
    // lines under a quiet filter (`warn` in --stdio mode, where they would reach ssh's terminal).
    let wants_trace = filter
        .max_level_hint()
        .is_none_or(|hint| hint >= tracing_subscriber::filter::LevelFilter::TRACE);
    if !wants_trace {
        return filter;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::prelude::*;

    fn enabled(filter: &str, target_debug: bool) -> bool {
        let subscriber = tracing_subscriber::registry().with(capped(EnvFilter::new(filter)));
        tracing::subscriber::with_default(subscriber, || {
            if target_debug {
                tracing::enabled!(target: "tungstenite::handshake", Level::DEBUG)
            } else {
                tracing::enabled!(target: "tungstenite::handshake", Level::TRACE)
            }
        })
    }

    #[test]
    fn a_peer_s_ip_address_as_sni_is_heard_only_at_debug() {
        let warns = |filter: &str| {
            let subscriber = tracing_subscriber::registry().with(quieted(EnvFilter::new(filter)));
            tracing::subscriber::with_default(
                subscriber,
                || tracing::enabled!(target: "rustls::msgs::handshake", Level::WARN),
            )
        };
        assert!(!warns("info"));
        assert!(!warns("warn"));
        assert!(warns("debug"));
        assert!(warns("info,rustls=debug"));
    }

    #[test]
    fn caps_hold_tungstenite_below_trace_without_raising_quiet_filters() {
        assert!(!enabled("trace", false), "trace would show secrets");
        assert!(enabled("trace", true));
        assert!(!enabled("warn", true), "a quiet filter stays quiet");
        assert!(!enabled("info", true));
    }
}
