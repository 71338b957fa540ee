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
    throw Error(Errc::not_a_segment, "Channel::attach: no channel at this address (magic mismatch)");
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
  // Wake every sleeping client so it notices at once instead of after its next slice.
  for (std::uint32_t i = 0; i < ch_.windows(); ++i) sys::futex_wake_all(ch_.window(i).turn);
}

void ChannelServer::wake() noexcept {
  ChannelControl& c = *ch_.control();
  c.doorbell.fetch_add(1, std::memory_order_seq_cst);
  sys::futex_wake_all(c.doorbell);
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
  // Hand back (INVARIANT1). seq_cst: ordered before the load of client_sleeping (the client sets
  // it, then re-reads turn, before sleeping).
  w.turn.store(ChannelWindow::kClientTurn, std::memory_order_seq_cst);
  if (w.client_sleeping.load(std::memory_order_seq_cst) != 0) sys::futex_wake(w.turn, 1);
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
  for (std::uint32_t i = 0; i < ch_.windows(); ++i)
    if (ch_.window(i).turn.load(std::memory_order_relaxed) == ChannelWindow::kServerTurn) return true;
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
    if (spin_.spin([&] { return any_request() || stop.load(std::memory_order_relaxed); })) continue;
    auto now = sys::Clock::now();
    if (now >= deadline) break;
    // Sleep protocol (pairs with ChannelClient::exchange): announce, read the doorbell, re-scan,
    // sleep only if nothing arrived and the doorbell did not ring.
    c.server_sleeping.store(1, std::memory_order_seq_cst);
    std::uint32_t bell = c.doorbell.load(std::memory_order_seq_cst);
    bool pending = false;
    for (std::uint32_t i = 0; i < ch_.windows() && !pending; ++i)
      pending = ch_.window(i).turn.load(std::memory_order_seq_cst) == ChannelWindow::kServerTurn;
    if (!pending && !stop.load(std::memory_order_acquire)) {
      sys::FutexResult fr =
          sys::futex_wait(c.doorbell, bell, std::min(deadline, now + std::chrono::milliseconds(100)));
      if (fr == sys::FutexResult::timed_out && on_client_gone_) reap_dead_clients();
      if (any_request()) spin_.learn_slow_wait(sys::Clock::now() - now);
    }
    // relaxed: only an optimisation hint for clients (a stale 1 costs them one futex wake).
    c.server_sleeping.store(0, std::memory_order_relaxed);
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
  // Hand the window over (INVARIANT1): release of our request bytes; seq_cst orders it before the
  // load of server_sleeping (the server announces sleep, then re-scans turn).
  w.turn.store(ChannelWindow::kServerTurn, std::memory_order_seq_cst);
  if (c.server_sleeping.load(std::memory_order_seq_cst) != 0) {
    c.doorbell.fetch_add(1, std::memory_order_seq_cst);
    sys::futex_wake(c.doorbell, 1);
  }
  // Bounded adaptive spin: the reply of a short handler comes back in well under a microsecond
  // when client and server run on different cores (channel_spin.hpp).
  if (spin_.spin([&] { return w.turn.load(std::memory_order_acquire) == ChannelWindow::kClientTurn; }))
    return ChannelStatus::ok;
  const auto slept_from = sys::Clock::now();
  for (;;) {
    w.client_sleeping.store(1, std::memory_order_seq_cst);
    if (w.turn.load(std::memory_order_seq_cst) == ChannelWindow::kClientTurn) break;
    auto now = sys::Clock::now();
    if (now >= deadline) {
      w.client_sleeping.store(0, std::memory_order_relaxed);
      in_flight_ = true;
      return ChannelStatus::timed_out;
    }
    sys::FutexResult fr = sys::futex_wait(w.turn, ChannelWindow::kServerTurn,
                                          std::min(deadline, now + kDeathCheckInterval));
    if (fr == sys::FutexResult::timed_out && !server_alive() &&
        w.turn.load(std::memory_order_acquire) != ChannelWindow::kClientTurn) {
      w.client_sleeping.store(0, std::memory_order_relaxed);
      in_flight_ = true;
      connected_ = false;
      w.client_lock.unlock();
      return ChannelStatus::peer_closed;
    }
  }
  // relaxed: a stale 1 only costs the server one futex wake.
  w.client_sleeping.store(0, std::memory_order_relaxed);
  spin_.learn_slow_wait(sys::Clock::now() - slept_from);
  return ChannelStatus::ok;
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
  ChannelWindow& w = ch_.window(index_);
  if (in_flight_) {
    // An earlier call timed out while the server held the window: wait for it to come back
    // before writing (the server may still be reading the old request).
    while (w.turn.load(std::memory_order_acquire) != ChannelWindow::kClientTurn) {
      if (!server_alive()) {
        connected_ = false;
        w.client_lock.unlock();
        return {ChannelStatus::peer_closed, 0, {}, {}};
      }
      auto now = sys::Clock::now();
      if (now >= deadline) return {ChannelStatus::timed_out, 0, {}, {}};
      (void)sys::futex_wait(w.turn, ChannelWindow::kServerTurn, std::min(deadline, now + kDeathCheckInterval));
    }
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

ChannelClient ChannelClient::connect(Channel ch, sys::Deadline deadline) {
  ChannelControl& c = *ch.control();
  if (c.server_up.load(std::memory_order_acquire) == 0)
    throw Error(Errc::peer_closed, "ChannelClient::connect: no server serves this channel (start a ChannelServer)");
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
  if (!found)
    throw Error(Errc::out_of_memory, "ChannelClient::connect: all " + std::to_string(ch.windows()) +
                                         " windows have live clients; create the channel with more windows");
  cl.epoch_ = c.server_epoch.load(std::memory_order_acquire);
  ch.window(cl.index_).epoch.store(cl.epoch_, std::memory_order_relaxed);
  cl.max_message_ = ch.area_size();
  // Handshake: our Hello in the request area, the server's back.
  transport::wire::Hello mine;
  mine.max_message = ch.area_size();
  mine.pid = sys::getpid();
  std::span<std::byte> req(ch.request_area(cl.index_), ch.area_size());
  std::uint32_t hl = transport::wire::encode_hello(req, 0, mine);
  if (hl == 0) throw Error(Errc::protocol, "ChannelClient::connect: hello does not fit the window");
  if (cl.in_flight_) {
    // Reuse call_in_place's resynchronisation: an empty call of the hello id would re-encode;
    // instead wait here for the turn to come back.
    auto& w = ch.window(cl.index_);
    while (w.turn.load(std::memory_order_acquire) != ChannelWindow::kClientTurn) {
      if (!cl.server_alive()) throw Error(Errc::peer_closed, "ChannelClient::connect: the server died");
      auto now = sys::Clock::now();
      if (now >= deadline) throw Error(Errc::timed_out, "ChannelClient::connect: window still busy");
      (void)sys::futex_wait(w.turn, ChannelWindow::kServerTurn, std::min(deadline, now + kDeathCheckInterval));
    }
    cl.in_flight_ = false;
    hl = transport::wire::encode_hello(req, 0, mine);  // the server may have been reading the old request
  }
  ChannelStatus st = cl.exchange(deadline);
  if (st == ChannelStatus::peer_closed) throw Error(Errc::peer_closed, "ChannelClient::connect: the server died");
  if (st == ChannelStatus::timed_out) throw Error(Errc::timed_out, "ChannelClient::connect: no hello from the server");
  const std::byte* rep = ch.reply_area(cl.index_);
  transport::wire::Header rh;
  std::memcpy(&rh, rep, sizeof rh);
  if (transport::wire::check_header(rh, ch.area_size()) != transport::wire::Status::ok || rh.id != transport::wire::ids::hello ||
      transport::wire::decode_hello({rep + transport::wire::kHeaderSize, transport::wire::payload_size(rh)}, cl.server_hello_) != transport::wire::Status::ok)
    throw Error(Errc::protocol, "ChannelClient::connect: the server's hello is malformed");
  cl.max_message_ = transport::wire::negotiate_max(mine.max_message, cl.server_hello_.max_message);
  if (cl.max_message_ > ch.area_size() || cl.max_message_ < transport::wire::kMinMaxMessage)
    throw Error(Errc::protocol, "ChannelClient::connect: negotiated maximum out of range");
  return cl;
}

}  // namespace shmkit
