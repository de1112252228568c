//! Downloads through the gateway: `GET /files/<name or id>`, whole or one byte range, with
//! the MD5 id as the `ETag` and the validators browsers and `curl -C -` use.

use super::*;

/// `GET /files/<name or id>`: the file, whole or a single byte range (`Range`, `If-Range`),
/// with its MD5 id as the `ETag` (so `If-None-Match` answers `304`).
pub(super) async fn download(
    State(gw): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(text): Path<String>,
    headers: HeaderMap,
) -> Answer<Response> {
    let access = gw.reader(&headers, peer.ip()).await?;
    if !access.perms.may_get() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not allowed: this access may not download",
        );
    }
    let target = resolve(&gw, &access, &text).await?;
    let dl = gw.store.download(&target).await.map_err(|e| match e {
        // An id outside the scope must look like an unknown id.
        StoreError::NotFound(_) => Refusal(StatusCode::NOT_FOUND, format!("No such file: {text}")),
        other => refusal(&access, other),
    })?;
    if !access.scope.contains(&dl.name) {
        return refuse(StatusCode::NOT_FOUND, format!("No such file: {text}"));
    }
    let etag = format!("\"{}\"", dl.id.to_hex());
    let leaf = access
        .scope
        .to_seen(&dl.name)
        .map(|n| n.split_parent().1.to_owned())
        .unwrap_or_default();
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, value(&etag));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    out.insert(header::CONTENT_DISPOSITION, value(&disposition(&leaf)));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));

    if header_is(&headers, header::IF_NONE_MATCH, |v| etag_matches(v, &etag)) {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    // `If-Range` with another validator: the file changed, so the whole file is sent.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let range = match headers.get(header::RANGE).filter(|_| range_applies) {
        None => None,
        Some(v) => match parse_range(v, dl.size) {
            Ok(range) => range,
            Err(()) => {
                out.insert(
                    header::CONTENT_RANGE,
                    value(&format!("bytes */{}", dl.size)),
                );
                return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
            }
        },
    };
    let (status, start, len) = match range {
        Some((start, end)) => {
            out.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{end}/{}", dl.size)),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        None => (StatusCode::OK, 0, dl.size),
    };
    out.insert(header::CONTENT_LENGTH, value(&len.to_string()));
    let body = body_of(dl.body, start, len).await.map_err(|e| {
        Refusal::from(StoreError::Io {
            action: "reading",
            name: Some(dl.name.clone()),
            source: e,
        })
    })?;
    Ok((status, out, body).into_response())
}

/// A header value from text we made (always visible ASCII).
pub(super) fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub(super) fn header_is(
    headers: &HeaderMap,
    name: header::HeaderName,
    f: impl Fn(&str) -> bool,
) -> bool {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .is_some_and(f)
}

/// Whether an `If-None-Match` list holds `etag` (weak comparison, `*` matches).
pub(super) fn etag_matches(list: &str, etag: &str) -> bool {
    list.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// A `Content-Disposition` that makes browsers save the file under its own name: an ASCII
/// fallback and the exact UTF-8 name (RFC 6266, RFC 8187).
pub(super) fn disposition(leaf: &str) -> String {
    let fallback: String = leaf
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // RFC 8187's attr-char: letters, digits and `!#$&+-.^_`|~` stay as they are.
    const ATTR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'!')
        .remove(b'#')
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b'-')
        .remove(b'.')
        .remove(b'^')
        .remove(b'_')
        .remove(b'`')
        .remove(b'|')
        .remove(b'~');
    let exact = percent_encoding::utf8_percent_encode(leaf, ATTR);
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}")
}

/// One satisfiable byte range `(first, last)` of a `size`-byte file, `None` for a header we
/// answer with the whole file (several ranges, or one we do not understand), `Err` for a range
/// outside the file (`416`).
pub(super) fn parse_range(v: &HeaderValue, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Ok(text) = v.to_str() else {
        return Ok(None);
    };
    let Ok(parsed) = http_range_header::parse_range_header(text) else {
        return Ok(None);
    };
    match parsed.validate(size) {
        Ok(ranges) if ranges.len() == 1 => Ok(Some((*ranges[0].start(), *ranges[0].end()))),
        Ok(_) => Ok(None),
        Err(_) => Err(()),
    }
}

/// The `len` bytes from `start` of a download's body, as a streamed response body.
pub(super) async fn body_of(body: store::Body, start: u64, len: u64) -> std::io::Result<Body> {
    let small = usize::try_from(start).ok().zip(usize::try_from(len).ok());
    match body {
        store::Body::Bytes(bytes) => {
            let (start, len) = small.ok_or_else(|| std::io::Error::other("range too large"))?;
            let end = start.saturating_add(len).min(bytes.len());
            Ok(Body::from(Bytes::from(bytes).slice(start.min(end)..end)))
        }
        store::Body::File(mut file) => {
            if start > 0 {
                file = transfer::blocking(move || file.seek(SeekFrom::Start(start)).map(|_| file))
                    .await??;
            }
            Ok(stream(Source::lean(file.take(len), len)?))
        }
        store::Body::Reader(mut reader) => {
            use tokio::io::AsyncReadExt as _;
            tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink()).await?;
            Ok(Body::from_stream(
                tokio_util::io::ReaderStream::with_capacity(reader.take(len), CHUNK),
            ))
        }
    }
}

/// A response body fed by `source`, one chunk at a time. Each chunk goes out as it was read,
/// without a copy; its buffer returns to `source` once hyper has written it, so what a
/// download holds stays within the source's buffers.
pub(super) fn stream(source: Source) -> Body {
    let chunks = futures_util::stream::unfold(source, |mut source| async move {
        let chunk = source.next().await?;
        Some((chunk.map(Bytes::from_owner), source))
    });
    Body::from_stream(chunks)
}
