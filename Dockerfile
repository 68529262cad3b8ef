# gmail-relay container image: a static-ish Rust binary on a distroless base (glibc, no shell),
# running as an unprivileged user with the spool on a volume.
#
#   docker build -t gmail-relay .
#   docker run -d --name relay -e GMAIL_RELAY__UPSTREAM__USERNAME=you@gmail.com \
#     -e GMAIL_RELAY__UPSTREAM__PASSWORD_FILE=/run/secrets/gmail-password \
#     -v relay-spool:/var/lib/gmail-relay gmail-relay
#
# See docker/docker-compose.yml for the relay as a sidecar next to an application.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin gmail-relay \
 && strip target/release/gmail-relay
# The spool directory, owned by the runtime user (distroless "nonroot", uid 65532), and the
# sendmail link for applications in the same image that call /usr/sbin/sendmail.
RUN install -d -m 0700 -o 65532 -g 65532 /out/var/lib/gmail-relay \
 && install -d /out/usr/sbin \
 && ln -s /usr/local/bin/gmail-relay /out/usr/sbin/sendmail

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gmail-relay /usr/local/bin/gmail-relay
COPY --from=build --chown=65532:65532 /out/var/lib/gmail-relay /var/lib/gmail-relay
COPY --from=build /out/usr/sbin/sendmail /usr/sbin/sendmail
COPY docker/relay.toml /etc/gmail-relay/relay.toml
# The local tools (queue, health, sendmail) find the config here.
ENV GMAIL_RELAY_CONFIG=/etc/gmail-relay/relay.toml
USER 65532:65532
VOLUME ["/var/lib/gmail-relay"]
EXPOSE 2525
# The binary itself asks the running relay (control socket): unhealthy while it is down or
# while delivery is paused (Gmail refused the login, quota spent, Gmail unreachable).
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/gmail-relay", "health"]
ENTRYPOINT ["/usr/local/bin/gmail-relay"]
CMD ["serve", "--config", "/etc/gmail-relay/relay.toml"]
