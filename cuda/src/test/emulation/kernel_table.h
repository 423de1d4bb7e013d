// Every kernel of the fatbin, by name, for the CPU emulation: the table is generated from
// cuda/src/main/cuda/kernels.def, and each kernel's arguments are unpacked from a CUDA-style
// `void** args` (one pointer per argument, to a copy of its value) by its own C++ signature. The
// signature string names the argument kinds as CudaKernel.java does: p pointer, i int, l long,
// f float, s a struct by value.
#pragma once

#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cuda_emu.h"
#include "../../main/cuda/distill_loss.cu"
#include "../../main/cuda/transformer_ops.cu"

namespace registry {

template <typename T>
constexpr char kind() {
    using U = std::remove_cv_t<T>;
    if constexpr (std::is_pointer_v<U>) return 'p';
    else if constexpr (std::is_same_v<U, int>) return 'i';
    else if constexpr (std::is_same_v<U, long>) return 'l';
    else if constexpr (std::is_same_v<U, float>) return 'f';
    else return 's';
}

template <typename... A>
std::string signature(void (*)(A...)) {
    return std::string{kind<A>()...};
}

template <typename... A, size_t... I>
void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

template <typename... A>
void call(void (*f)(A...), void** args) {
    call(f, args, std::index_sequence_for<A...>{});
}

struct Kernel {
    const char* name;
    std::string signature;
    void (*launch)(int grid, int block, void** args);
};

inline const std::vector<Kernel>& kernels() {
    static const std::vector<Kernel> table = {
#define DISTILLERY_KERNEL(k) \
    {#k, signature(&k), [](int grid, int block, void** args) { emu::launch(grid, block, [&] { call(&k, args); }); }},
#include "../../main/cuda/kernels.def"
#undef DISTILLERY_KERNEL
    };
    return table;
}

// The kernel named `name`, or nullptr.
inline const Kernel* find(const char* name) {
    for (const Kernel& k : kernels()) {
        if (std::strcmp(k.name, name) == 0) return &k;
    }
    return nullptr;
}

}  // namespace registry
