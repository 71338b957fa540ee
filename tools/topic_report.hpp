// The publish/subscribe part of the shmkit command: `shmkit info` lists each topic with its
// publishers, its subscribers and their queue depths; `shmkit rm --stale` gives back what dead
// publishers and subscribers held (loans, queued and held samples).
#pragma once

#include <cstddef>
#include <string>

#include "shmkit/shm/segment.hpp"

namespace shmkit::tool {

// Text lines for `info` ("" when the segment has no topic).
std::string topics_text(const Segment& seg);
// A JSON array of topics for `info --json` ("[]" when none).
std::string topics_json(const Segment& seg);
// Reclaims the slots of dead publishers and subscribers in every topic; returns how many.
std::size_t reclaim_topics(const Segment& seg);

}  // namespace shmkit::tool
