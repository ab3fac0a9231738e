// What depot.cc and depot_upload.cc share: the wire form of chunk lists, and the Upload
// capabilities a Transfer's offer returns.
#ifndef BUNKER_TRANSFER_DEPOT_INTERNAL_H_
#define BUNKER_TRANSFER_DEPOT_INTERNAL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "capsule/incoming.h"
#include "spec/transfer.capnp.h"
#include "transfer/depot.h"

namespace bunker::transfer {

// Consecutive indexes as ranges, for the wire; `init(n)` makes the list of n ranges.
template <typename InitList>
void SetRanges(const std::vector<uint64_t>& sorted, InitList init) {
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (uint64_t i : sorted) {
    if (!ranges.empty() && ranges.back().first + ranges.back().second == i) {
      ++ranges.back().second;
    } else {
      ranges.push_back({i, 1});
    }
  }
  auto list = init(static_cast<unsigned>(ranges.size()));
  for (size_t k = 0; k < ranges.size(); ++k) {
    list[static_cast<unsigned>(k)].setFirst(ranges[k].first);
    list[static_cast<unsigned>(k)].setCount(ranges[k].second);
  }
}

// The Upload through which `peer` fills `in` (transfer/depot_upload.cc): puts are checked and
// written on the depot's workers, commits and finish wait for the puts before them.
schema::Upload::Client NewUpload(Depot& depot, std::shared_ptr<capsule::IncomingCapsule> in,
                                 std::string peer);
// The Upload of a capsule the store already holds: nothing to put, finish returns `id`.
schema::Upload::Client NewStoredUpload(std::string id);

}  // namespace bunker::transfer

#endif  // BUNKER_TRANSFER_DEPOT_INTERNAL_H_
