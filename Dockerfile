# Malleable appliance image, for building where a registry is reachable:
#   docker build -t malleable .
# Without a registry, scripts/image.sh builds the same runtime stage from a
# locally built binary.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/malleable ./cmd/malleable \
 && mkdir -p /out/data && cp scripts/container.ini /out/appliance.ini

# --- runtime stage (scripts/image.sh builds from here) ---
FROM scratch
COPY --from=build /out/malleable /malleable
COPY --from=build /out/appliance.ini /etc/malleable/appliance.ini
COPY --from=build --chown=65532:65532 /out/data /var/lib/malleable
USER 65532:65532
VOLUME /var/lib/malleable
EXPOSE 8780
ENTRYPOINT ["/malleable"]
CMD ["serve", "--config", "/etc/malleable/appliance.ini"]
