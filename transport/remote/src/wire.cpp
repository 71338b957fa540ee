#include "shmkit/transport/wire.hpp"

#include <algorithm>
#include <cerrno>

namespace shmkit::transport::wire {

std::string_view to_string(Status s) noexcept {
  switch (s) {
    case Status::ok: return "ok";
    case Status::truncated: return "truncated frame";
    case Status::too_large: return "frame longer than the negotiated maximum";
    case Status::malformed: return "malformed frame";
    case Status::trailing_bytes: return "bytes left over after the message";
    case Status::unsupported_id: return "unsupported message id";
  }
  return "unknown wire status";
}

int to_errno(Status s) noexcept {
  switch (s) {
    case Status::ok: return 0;
    case Status::truncated: return EBADMSG;
    case Status::too_large: return EMSGSIZE;
    case Status::malformed: return EPROTO;
    case Status::trailing_bytes: return EPROTO;
    case Status::unsupported_id: return EOPNOTSUPP;
  }
  return EPROTO;
}

Status check_header(const Header& h, std::uint32_t max_message) noexcept {
  if (h.length < kHeaderSize || h.flags != 0) return Status::malformed;
  if (h.length > max_message) return Status::too_large;
  return Status::ok;
}

std::uint32_t Writer::finish() noexcept {
  if (!ok_ || pos_ < kHeaderSize || pos_ > UINT32_MAX) return 0;
  Header h{static_cast<std::uint32_t>(pos_), id_, 0, tag_};
  std::memcpy(buf_.data(), &h, sizeof h);
  return h.length;
}

void Writer::string(std::string_view s) noexcept {
  if (s.size() > UINT32_MAX) return fail();
  u32(static_cast<std::uint32_t>(s.size()));
  raw(s.data(), s.size());
}

void Writer::strings(std::span<const std::string_view> v) noexcept {
  if (v.size() > UINT32_MAX) return fail();
  u32(static_cast<std::uint32_t>(v.size()));
  for (auto s : v) string(s);
}

void Writer::strings(std::span<const std::string> v) noexcept {
  if (v.size() > UINT32_MAX) return fail();
  u32(static_cast<std::uint32_t>(v.size()));
  for (const auto& s : v) string(s);
}

bool Reader::bytes(std::size_t n, std::span<const std::byte>& out) noexcept {
  if (status_ != Status::ok) return false;
  if (n > remaining()) return fail(Status::truncated);
  out = buf_.subspan(pos_, n);
  pos_ += n;
  return true;
}

bool Reader::string(std::string_view& out) noexcept {
  std::uint32_t len;
  if (!u32(len)) return false;
  if (len > remaining()) return fail(Status::truncated);
  out = std::string_view(reinterpret_cast<const char*>(buf_.data() + pos_), len);
  pos_ += len;
  return true;
}

bool Reader::strings(StringArrayView& out) noexcept {
  std::uint32_t n;
  if (!u32(n)) return false;
  // Each element needs at least its 4-byte length: reject impossible counts before walking.
  if (std::uint64_t{n} * 4 > remaining()) return fail(Status::truncated);
  const std::size_t start = pos_;
  for (std::uint32_t i = 0; i < n; ++i) {
    std::string_view s;
    if (!string(s)) return false;
  }
  out = StringArrayView(buf_.data() + start, pos_ - start, n);
  return true;
}

std::vector<std::string> StringArrayView::to_vector() const {
  std::vector<std::string> v;
  v.reserve(n_);
  for_each([&](std::string_view s) { v.emplace_back(s); });
  return v;
}

bool StringArrayView::contains(std::string_view s) const {
  bool found = false;
  for_each([&](std::string_view e) { found = found || e == s; });
  return found;
}

std::uint32_t encode_error(std::span<std::byte> buf, Tag tag, MsgId request_id, int code,
                           std::string_view detail) noexcept {
  Writer w(buf);
  w.begin(ids::error, tag);
  w.pod(ErrorFixed{code, request_id, 0});
  w.string(detail.substr(0, std::min(detail.size(), kMaxErrorDetail)));
  return w.finish();
}

Status decode_error(std::span<const std::byte> payload, ErrorView& out) noexcept {
  Reader r(payload);
  ErrorFixed f;
  std::string_view detail;
  if (!r.pod(f) || !r.string(detail)) return r.status();
  if (f.reserved != 0 || f.code <= 0 || detail.size() > kMaxErrorDetail) return Status::malformed;
  if (auto s = r.finish(); s != Status::ok) return s;
  out = ErrorView{f.code, f.request_id, detail};
  return Status::ok;
}

bool Hello::serves(MsgId id) const noexcept {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}
bool Hello::has_feature(std::string_view f) const noexcept {
  return std::find(features.begin(), features.end(), f) != features.end();
}

std::uint32_t encode_hello(std::span<std::byte> buf, Tag tag, const Hello& h) noexcept {
  Writer w(buf);
  w.begin(ids::hello, tag);
  w.pod(HelloFixed{kVersion, h.max_message, h.pid, 0});
  w.slice(std::span<const MsgId>(h.ids));
  w.strings(std::span<const std::string>(h.features));
  return w.finish();
}

Status decode_hello(std::span<const std::byte> payload, Hello& out) {
  Reader r(payload);
  HelloFixed f;
  SliceView<MsgId> id_list;
  StringArrayView features;
  if (!r.pod(f) || !r.slice(id_list) || !r.strings(features)) return r.status();
  if (auto s = r.finish(); s != Status::ok) return s;
  if (f.version != kVersion || f.reserved != 0 || f.max_message < kMinMaxMessage ||
      f.max_message > kAbsoluteMaxMessage)
    return Status::malformed;
  // Sizes below are bounded by the payload length, itself bounded by the negotiated maximum.
  out.max_message = f.max_message;
  out.pid = f.pid;
  out.ids = id_list.to_vector();
  out.features = features.to_vector();
  return Status::ok;
}

}  // namespace shmkit::transport::wire
