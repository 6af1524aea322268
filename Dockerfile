# tokenwarden: a static binary on distroless, as a non-root user.
# CI builds the same static binary with hack/static-build.sh (no container engine there).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN bash hack/static-build.sh

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/tokenwarden /usr/local/bin/tokenwarden
# Also answers as `kubectl tokenwarden` when copied as kubectl-tokenwarden.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tokenwarden"]
CMD ["run"]
