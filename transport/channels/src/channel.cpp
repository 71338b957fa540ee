#include "shmkit/channels/channel.hpp"

#include <cerrno>
#include <cstring>
#include <new>

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/proc_control.hpp"

namespace shmkit {

const char* to_string(ChannelStatus s) noexcept {
  switch (s) {
    case ChannelStatus::ok: return "ok";
    case ChannelStatus::error_reply: return "error_reply";
    case ChannelStatus::peer_closed: return "peer_closed";
    case ChannelStatus::timed_out: return "timed_out";
    case ChannelStatus::too_large: return "too_large";
    case ChannelStatus::protocol: return "protocol";
    case ChannelStatus::no_free_window: return "no_free_window";
    case ChannelStatus::not_recoverable: return "not_recoverable";
  }
  return "?";
}

namespace {
std::uint64_t stride_for(std::uint32_t max_message) noexcept {
  return (Channel::kAreaOffset + 2 * std::uint64_t{max_message} + 63) / 64 * 64;
}
std::uint64_t windows_offset() noexcept { return (sizeof(ChannelControl) + 63) / 64 * 64; }
}  // namespace

// ---- Channel ---------------------------------------------------------------------------------

std::size_t Channel::required_bytes(std::uint32_t windows, std::uint32_t max_message) noexcept {
  return windows_offset() + windows * stride_for(max_message);
}

Channel Channel::create(void* mem, std::size_t bytes, std::uint32_t windows, std::uint32_t max_message) {
  if (mem == nullptr || reinterpret_cast<std::uintptr_t>(mem) % 64 != 0)
    throw Error(Errc::invalid_argument, "Channel::create: memory must be non-null and 64-byte aligned");
  if (windows == 0 || windows > 4096)
    throw Error(Errc::invalid_argument, "Channel::create: windows must be 1..4096, got " + std::to_string(windows));
  if (max_message < transport::wire::kMinMaxMessage || max_message > transport::wire::kAbsoluteMaxMessage)
    throw Error(Errc::invalid_argument, "Channel::create: max_message must be within [" +
                                            std::to_string(transport::wire::kMinMaxMessage) + ", " +
                                            std::to_string(transport::wire::kAbsoluteMaxMessage) + "]");
  if (bytes < required_bytes(windows, max_message))
    throw Error(Errc::invalid_argument, "Channel::create: " + std::to_string(bytes) + " bytes given, " +
                                            std::to_string(required_bytes(windows, max_message)) +
                                            " needed (Channel::required_bytes)");
  std::memset(mem, 0, windows_offset());
  auto* c = new (mem) ChannelControl;
  c->version = ChannelControl::kVersion;
  c->windows = windows;
  c->area_size = max_message;
  c->window_stride = stride_for(max_message);
  c->windows_offset = windows_offset();
  c->total_bytes = bytes;
  for (std::uint32_t i = 0; i < windows; ++i) {
    void* w = static_cast<std::byte*>(mem) + c->windows_offset + i * c->window_stride;
    std::memset(w, 0, kAreaOffset);  // all-zero: client's turn, unlocked client_lock
    new (w) ChannelWindow;
  }
  // Publishes the block: attach() reads magic with acquire.
  std::atomic_ref<std::uint64_t>(c->magic).store(ChannelControl::kMagic, std::memory_order_release);
  return attach(mem, bytes);
}

Channel Channel::attach(void* mem, std::size_t bytes) {
  if (mem == nullptr || reinterpret_cast<std::uintptr_t>(mem) % 64 != 0 || bytes < windows_offset())
    throw Error(Errc::invalid_argument, "Channel::attach: memory must be 64-byte aligned and hold a ChannelControl");
  auto* c = static_cast<ChannelControl*>(mem);
  if (std::atomic_ref<std::uint64_t>(c->magic).load(std::memory_order_acquire) != ChannelControl::kMagic)
    throw Error(Errc::bad_magic, "Channel::attach: no channel at this address (its magic number is not a "
                                 "Channel's; was it made by Channel::create at this offset?)");
  if (c->version != ChannelControl::kVersion)
    throw Error(Errc::version_mismatch, "Channel::attach: layout version " + std::to_string(c->version));
  // INVARIANT3, checked against what this process mapped.
  if (c->windows == 0 || c->windows > 4096 || c->area_size < transport::wire::kMinMaxMessage ||
      c->area_size > transport::wire::kAbsoluteMaxMessage || c->window_stride != stride_for(c->area_size) ||
      c->windows_offset != windows_offset() || required_bytes(c->windows, c->area_size) > bytes)
    throw Error(Errc::corrupt, "Channel::attach: channel geometry does not fit the " + std::to_string(bytes) +
                                   " bytes given");
  Channel ch;
  ch.ctl_ = c;
  ch.windows_ = c->windows;
  ch.area_size_ = c->area_size;
  ch.stride_ = c->window_stride;
  ch.windows_offset_ = c->windows_offset;
  return ch;
}

ChannelWindow& Channel::window(std::uint32_t i) const noexcept {
  return *reinterpret_cast<ChannelWindow*>(reinterpret_cast<std::byte*>(ctl_) + windows_offset_ + i * stride_);
}
std::byte* Channel::request_area(std::uint32_t i) const noexcept {
  return reinterpret_cast<std::byte*>(&window(i)) + kAreaOffset;
}
std::byte* Channel::reply_area(std::uint32_t i) const noexcept {
  return request_area(i) + area_size_;
}

// ---- server ----------------------------------------------------------------------------------

ChannelServer::ChannelServer(Channel ch) : ch_(ch), handlers_(65536) {}

ChannelServer::~ChannelServer() { stop(); }

void ChannelServer::handle(transport::wire::MsgId id, Handler h) {
  if (id < transport::wire::ids::kCoreEnd)
    throw Error(Errc::invalid_argument, "ChannelServer::handle: ids below " + std::to_string(transport::wire::ids::kCoreEnd) +
                                            " belong to the wire core (error, hello)");
  if (!handlers_[id]) ids_.push_back(id);
  handlers_[id] = std::move(h);
}

void ChannelServer::start() {
  ChannelControl& c = *ch_.control();
  LockResult r = c.server_lock.try_acquire();
  if (r == LockResult::owner_died) {
    // The previous server died: windows it left in the server's turn hold requests whose clients
    // have already been told peer_closed (epoch changes below); answer them so the turn returns.
    c.server_lock.mark_consistent();
  } else if (r == LockResult::would_block) {
    throw Error(Errc::already_exists, "ChannelServer::start: another live process serves this channel");
  } else if (r != LockResult::acquired) {
    throw Error(Errc::not_recoverable, "ChannelServer::start: the channel's server lock is not recoverable");
  }
  c.server = sys::this_process();
  c.server_epoch.fetch_add(1, std::memory_order_acq_rel);
  c.server_up.store(1, std::memory_order_release);
  started_ = true;
}

void ChannelServer::stop() noexcept {
  if (!started_) return;
  started_ = false;
  ChannelControl& c = *ch_.control();
  c.server_up.store(0, std::memory_order_release);
  c.server_lock.unlock();
  // Wake every sleeping client so it notices at once (its wait also ends on server_up == 0)
  // instead of after its next death-check slice.
  for (std::uint32_t i = 0; i < ch_.windows(); ++i) ch_.window(i).replied.notify_all();
}

void ChannelServer::wake() noexcept { ch_.control()->doorbell.notify_all(&ch_.control()->server_presence); }

std::uint32_t ChannelServer::spin_ns(std::chrono::nanoseconds max) noexcept {
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(max.count(), 0, UINT32_MAX));
}

void ChannelServer::serve_window(std::uint32_t i) noexcept {
  ChannelWindow& w = ch_.window(i);
  const std::uint32_t area = ch_.area_size();
  const std::byte* in = ch_.request_area(i);
  std::span<std::byte> out(ch_.reply_area(i), area);
  transport::wire::Header h;
  std::memcpy(&h, in, sizeof h);  // the client is not writing: it is our turn (INVARIANT1)
  std::uint32_t len = 0;
  transport::wire::Status st = transport::wire::check_header(h, area);  // INVARIANT2
  if (st != transport::wire::Status::ok) {
    len = transport::wire::encode_error(out, h.tag, h.id, transport::wire::to_errno(st), "malformed request frame");
  } else {
    std::span<const std::byte> payload(in + transport::wire::kHeaderSize, transport::wire::payload_size(h));
    if (h.id == transport::wire::ids::hello) {
      transport::wire::Hello peer;
      if (transport::wire::decode_hello(payload, peer) != transport::wire::Status::ok) {
        len = transport::wire::encode_error(out, h.tag, h.id, EPROTO, "malformed hello");
      } else {
        transport::wire::Hello mine;
        mine.max_message = area;
        mine.pid = sys::getpid();
        mine.ids = ids_;
        mine.features = {"shm-window"};
        len = transport::wire::encode_hello(out, h.tag, mine);
      }
    } else if (!handlers_[h.id]) {
      len = transport::wire::encode_error(out, h.tag, h.id, EOPNOTSUPP, "no handler for this message id");
    } else {
      transport::wire::Writer wr(out);
      wr.begin(h.id, h.tag);
      int code;
      try {
        code = handlers_[h.id](Request{h.id, h.tag, payload, i}, wr);
      } catch (...) {
        code = EIO;  // a handler that throws must not take the server down with it
      }
      if (code == 0) {
        len = wr.finish();
        if (len == 0) len = transport::wire::encode_error(out, h.tag, h.id, EMSGSIZE, "reply larger than the window");
      } else {
        len = transport::wire::encode_error(out, h.tag, h.id, code, "handler failed");
      }
    }
  }
  (void)len;  // the reply frame carries its own length; 0 cannot happen (kMinMaxMessage fits an Error)
  last_window_ = i;
  // Hand back (INVARIANT1). release: the reply bytes are visible to the client that sees the turn;
  // the sleep protocol's ordering comes from the EventCount (its INVARIANT1).
  w.turn.store(ChannelWindow::kClientTurn, std::memory_order_release);
  w.replied.notify_all(&w.client_presence);
}

std::uint64_t ChannelServer::poll() {
  std::uint64_t n = 0;
  for (std::uint32_t i = 0; i < ch_.windows(); ++i) {
    // acquire pairs with the client's release of turn: its request bytes are visible.
    if (ch_.window(i).turn.load(std::memory_order_acquire) == ChannelWindow::kServerTurn) {
      serve_window(i);
      ++n;
    }
  }
  return n;
}

std::uint32_t ChannelServer::reap_dead_clients() {
  std::uint32_t dead = 0;
  for (std::uint32_t i = 0; i < ch_.windows(); ++i) {
    ChannelWindow& w = ch_.window(i);
    // The robust-lock probe (see the header): would_block = a live client holds the window.
    LockResult r = w.client_lock.try_acquire();
    if (r == LockResult::owner_died) {
      // Nothing to repair in the window itself: a request it left in our turn is answered by the
      // next poll, and connect() resynchronises on the turn word.
      w.client_lock.mark_consistent();
      ++dead;
      if (on_client_gone_) on_client_gone_(i);
    }
    if (r == LockResult::acquired || r == LockResult::owner_died) w.client_lock.unlock();
  }
  return dead;
}

bool ChannelServer::any_request() const noexcept {
  // acquire: the readiness test of the server's wait (pairs with the client's release of turn).
  for (std::uint32_t i = 0; i < ch_.windows(); ++i)
    if (ch_.window(i).turn.load(std::memory_order_acquire) == ChannelWindow::kServerTurn) return true;
  return false;
}

std::uint64_t ChannelServer::serve(const std::atomic<bool>& stop, sys::Deadline deadline) {
  if (!started_) start();
  ChannelControl& c = *ch_.control();
  std::uint64_t served = 0;
  while (!stop.load(std::memory_order_acquire)) {
    std::uint64_t n = poll();
    served += n;
    if (n != 0) continue;
    const auto now = sys::Clock::now();
    if (now >= deadline) break;
    // Idle: wait for a request (or stop, or wake()). The likely next caller is the client served
    // last; spinning is worth it only while it runs on another CPU.
    auto ready = [&] { return any_request() || stop.load(std::memory_order_acquire); };
    const Presence& partner = ch_.window(last_window_ < ch_.windows() ? last_window_ : 0).client_presence;
    if (await_until(c.doorbell, ready, std::min(deadline, now + std::chrono::milliseconds(100)), spin_,
                    c.server_presence, partner) == AwaitResult::timed_out &&
        on_client_gone_)
      reap_dead_clients();  // idle for a whole slice: look for dead clients
  }
  return served;
}

// ---- client ----------------------------------------------------------------------------------

ChannelClient::~ChannelClient() { disconnect(); }

ChannelClient::ChannelClient(ChannelClient&& o) noexcept { *this = std::move(o); }

ChannelClient& ChannelClient::operator=(ChannelClient&& o) noexcept {
  if (this != &o) {
    disconnect();
    ch_ = o.ch_;
    index_ = o.index_;
    connected_ = o.connected_;
    in_flight_ = o.in_flight_;
    epoch_ = o.epoch_;
    max_message_ = o.max_message_;
    next_tag_ = o.next_tag_;
    server_hello_ = std::move(o.server_hello_);
    spin_ = o.spin_;
    o.connected_ = false;
  }
  return *this;
}

void ChannelClient::disconnect() noexcept {
  if (!connected_) return;
  connected_ = false;
  ch_.window(index_).client_lock.unlock();
}

bool ChannelClient::server_alive() noexcept {
  ChannelControl& c = *ch_.control();
  if (c.server_up.load(std::memory_order_acquire) == 0 ||
      c.server_epoch.load(std::memory_order_acquire) != epoch_)
    return false;
  // The robust-lock probe (see the header): would_block = a live process holds it.
  LockResult r = c.server_lock.try_acquire();
  if (r == LockResult::would_block) return true;
  if (r == LockResult::owner_died) {
    c.server_up.store(0, std::memory_order_release);
    c.server_lock.mark_consistent();
  }
  if (r == LockResult::acquired || r == LockResult::owner_died) c.server_lock.unlock();
  return false;
}

ChannelStatus ChannelClient::exchange(sys::Deadline deadline) noexcept {
  ChannelControl& c = *ch_.control();
  ChannelWindow& w = ch_.window(index_);
  // Hand the window over (INVARIANT1). release: our request bytes are visible to the server that
  // sees the turn; the sleep protocol's ordering comes from the EventCount (its INVARIANT1).
  w.turn.store(ChannelWindow::kServerTurn, std::memory_order_release);
  c.doorbell.notify_all(&c.server_presence);
  return await_turn(deadline);
}

ChannelStatus ChannelClient::await_turn(sys::Deadline deadline) noexcept {
  ChannelControl& c = *ch_.control();
  ChannelWindow& w = ch_.window(index_);
  // acquire: pairs with the server's release of turn (the reply bytes) and stop()'s server_up.
  auto mine = [&] { return w.turn.load(std::memory_order_acquire) == ChannelWindow::kClientTurn; };
  auto ready = [&] { return mine() || c.server_up.load(std::memory_order_acquire) == 0; };
  for (;;) {
    // In slices of kDeathCheckInterval: a dead server cannot notify (see the header).
    const auto now = sys::Clock::now();
    (void)await_until(w.replied, ready, std::min(deadline, now + kDeathCheckInterval), spin_, w.client_presence,
                      c.server_presence);
    if (mine()) return ChannelStatus::ok;
    if (!server_alive() && !mine()) {
      in_flight_ = true;
      connected_ = false;
      w.client_lock.unlock();
      return ChannelStatus::peer_closed;
    }
    if (sys::Clock::now() >= deadline) {
      in_flight_ = true;
      return ChannelStatus::timed_out;
    }
  }
}

std::span<std::byte> ChannelClient::request_payload() noexcept {
  if (!connected_) return {};
  return {ch_.request_area(index_) + transport::wire::kHeaderSize, max_payload()};
}

CallResult ChannelClient::call(transport::wire::MsgId id, std::span<const std::byte> payload,
                               sys::Deadline deadline) noexcept {
  if (!connected_) return {ChannelStatus::peer_closed, 0, {}, {}};
  if (payload.size() > max_payload()) return {ChannelStatus::too_large, 0, {}, {}};
  if (!payload.empty())
    std::memmove(ch_.request_area(index_) + transport::wire::kHeaderSize, payload.data(), payload.size());
  return call_in_place(id, payload.size(), deadline);
}

CallResult ChannelClient::call_in_place(transport::wire::MsgId id, std::size_t payload_size,
                                        sys::Deadline deadline) noexcept {
  if (!connected_) return {ChannelStatus::peer_closed, 0, {}, {}};
  if (payload_size > max_payload()) return {ChannelStatus::too_large, 0, {}, {}};
  if (in_flight_) {
    // An earlier call timed out while the server held the window: wait for it to come back
    // before writing (the server may still be reading the old request).
    ChannelStatus st = await_turn(deadline);
    if (st != ChannelStatus::ok) return {st, 0, {}, {}};
    in_flight_ = false;
  }
  if (ch_.control()->server_epoch.load(std::memory_order_acquire) != epoch_) {
    // A server started since we connected: ours is gone, and the new one does not know us.
    return {ChannelStatus::peer_closed, 0, {}, {}};
  }
  transport::wire::Tag tag = next_tag_++;
  transport::wire::Header h{static_cast<std::uint32_t>(transport::wire::kHeaderSize + payload_size), id, 0, tag};
  std::memcpy(ch_.request_area(index_), &h, sizeof h);
  ChannelStatus st = exchange(deadline);
  if (st != ChannelStatus::ok) return {st, 0, {}, {}};

  // The reply was written by another process: check it before use (INVARIANT2).
  const std::byte* rep = ch_.reply_area(index_);
  transport::wire::Header rh;
  std::memcpy(&rh, rep, sizeof rh);
  if (transport::wire::check_header(rh, ch_.area_size()) != transport::wire::Status::ok || rh.tag != tag)
    return {ChannelStatus::protocol, 0, {}, {}};
  std::span<const std::byte> payload(rep + transport::wire::kHeaderSize, transport::wire::payload_size(rh));
  if (rh.id == transport::wire::ids::error) {
    transport::wire::ErrorView ev;
    if (transport::wire::decode_error(payload, ev) != transport::wire::Status::ok) return {ChannelStatus::protocol, 0, {}, {}};
    return {ChannelStatus::error_reply, ev.code, ev.detail, {}};
  }
  if (rh.id != id) return {ChannelStatus::protocol, 0, {}, {}};
  return {ChannelStatus::ok, 0, {}, payload};
}

ChannelStatus ChannelClient::try_connect(Channel ch, ChannelClient& out, sys::Deadline deadline) {
  out.disconnect();
  ChannelControl& c = *ch.control();
  if (c.server_up.load(std::memory_order_acquire) == 0) return ChannelStatus::peer_closed;
  ChannelClient cl;
  cl.ch_ = ch;
  bool found = false;
  for (std::uint32_t i = 0; i < ch.windows() && !found; ++i) {
    ChannelWindow& w = ch.window(i);
    LockResult r = w.client_lock.try_acquire();
    if (r == LockResult::would_block || r == LockResult::not_recoverable || r == LockResult::timed_out) continue;
    if (r == LockResult::owner_died) w.client_lock.mark_consistent();  // repaired below
    cl.index_ = i;
    cl.connected_ = true;
    found = true;
    // A previous client may have died with a request in the server's hands: let it finish.
    cl.in_flight_ = w.turn.load(std::memory_order_acquire) != ChannelWindow::kClientTurn;
    w.client = sys::this_process();
  }
  if (!found) return ChannelStatus::no_free_window;
  cl.epoch_ = c.server_epoch.load(std::memory_order_acquire);
  ch.window(cl.index_).epoch.store(cl.epoch_, std::memory_order_relaxed);
  cl.max_message_ = ch.area_size();
  if (cl.in_flight_) {
    // Wait for the turn to come back before writing our Hello: the server may still be reading
    // the dead client's request.
    ChannelStatus st = cl.await_turn(deadline);
    if (st != ChannelStatus::ok) return st;
    cl.in_flight_ = false;
  }
  // Handshake: our Hello in the request area, the server's back. A Hello without ids or features
  // fits any window (kMinMaxMessage); the small vectors it builds are the only allocations.
  transport::wire::Hello mine;
  mine.max_message = ch.area_size();
  mine.pid = sys::getpid();
  std::span<std::byte> req(ch.request_area(cl.index_), ch.area_size());
  if (transport::wire::encode_hello(req, 0, mine) == 0) return ChannelStatus::too_large;
  ChannelStatus st = cl.exchange(deadline);
  if (st != ChannelStatus::ok) return st;
  const std::byte* rep = ch.reply_area(cl.index_);
  transport::wire::Header rh;
  std::memcpy(&rh, rep, sizeof rh);
  if (transport::wire::check_header(rh, ch.area_size()) != transport::wire::Status::ok ||
      rh.id != transport::wire::ids::hello ||
      transport::wire::decode_hello({rep + transport::wire::kHeaderSize, transport::wire::payload_size(rh)},
                                    cl.server_hello_) != transport::wire::Status::ok)
    return ChannelStatus::protocol;
  cl.max_message_ = transport::wire::negotiate_max(mine.max_message, cl.server_hello_.max_message);
  if (cl.max_message_ > ch.area_size() || cl.max_message_ < transport::wire::kMinMaxMessage)
    return ChannelStatus::protocol;
  out = std::move(cl);
  return ChannelStatus::ok;
}

ChannelClient ChannelClient::connect(Channel ch, sys::Deadline deadline) {
  ChannelClient cl;
  const ChannelStatus st = try_connect(ch, cl, deadline);
  switch (st) {
    case ChannelStatus::ok: return cl;
    case ChannelStatus::peer_closed:
      throw Error(Errc::peer_closed, "ChannelClient::connect: no server serves this channel, or it died "
                                     "(start a ChannelServer)");
    case ChannelStatus::no_free_window:
      throw Error(Errc::out_of_memory, "ChannelClient::connect: all " + std::to_string(ch.windows()) +
                                           " windows have live clients (no_free_window); create the channel with "
                                           "more windows");
    case ChannelStatus::timed_out:
      throw Error(Errc::timed_out, "ChannelClient::connect: no hello from the server before the deadline");
    default:
      throw Error(Errc::protocol, std::string("ChannelClient::connect: the handshake failed (") + to_string(st) +
                                      "): the server's hello is malformed or out of range");
  }
}

}  // namespace shmkit
