// A C interface over libtorch's AOTInductor package loader, for src/engine/aoti.rs.
//
// Every function catches what libtorch throws and hands it back as a message the caller frees with
// dls_aoti_free_string, so no C++ exception ever crosses into Rust. Tensors cross as `at::Tensor*`
// allocated with `new`, the same representation tch uses for its tensors (torch-sys's C_tensor),
// so Rust wraps them without copying.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

char* copy_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p != nullptr) {
    std::memcpy(p, s.c_str(), s.size() + 1);
  }
  return p;
}

// Runs `f`, turning any exception into a message in `*err`; returns whether it succeeded.
template <typename F>
bool guarded(char** err, F&& f) {
  try {
    f();
    return true;
  } catch (const std::exception& e) {
    *err = copy_string(e.what());
  } catch (...) {
    *err = copy_string("unknown C++ exception");
  }
  return false;
}

// "key\tvalue\n" lines; AOTI metadata keys and values hold neither tabs nor newlines.
std::string encode_map(const std::unordered_map<std::string, std::string>& m) {
  std::string out;
  for (const auto& kv : m) {
    out += kv.first;
    out += '\t';
    out += kv.second;
    out += '\n';
  }
  return out;
}

}  // namespace

extern "C" {

void dls_aoti_free_string(char* s) { std::free(s); }

// The metadata of `model_name` in the package, read without loading its shared library.
char* dls_aoti_metadata(const char* path, const char* model_name, char** err) {
  char* out = nullptr;
  guarded(err, [&] {
    auto m = torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, model_name);
    out = copy_string(encode_map(m));
  });
  return out;
}

// Unpacks the package into a temporary directory and loads `model_name` from it for the device
// the package was compiled for (`device_index` -1 for the CPU or the current CUDA device).
// Null with `*err` set on failure.
void* dls_aoti_load(const char* path, const char* model_name, int device_index, char** err) {
  torch::inductor::AOTIModelPackageLoader* loader = nullptr;
  guarded(err, [&] {
    loader = new torch::inductor::AOTIModelPackageLoader(
        path, model_name, /*run_single_threaded=*/false, /*num_runners=*/1,
        static_cast<c10::DeviceIndex>(device_index));
  });
  return loader;
}

// Frees the loader: its runner, its constants and its temporary directory.
void dls_aoti_drop(void* loader) {
  char* err = nullptr;
  guarded(&err, [&] { delete static_cast<torch::inductor::AOTIModelPackageLoader*>(loader); });
  std::free(err);
}

// Runs the flattened inputs through the model. On success `*outputs` holds `*n_outputs` new
// tensors (the caller owns each, and frees the array with dls_aoti_free_outputs) and 0 is
// returned; on failure -1 with `*err` set.
int dls_aoti_run(void* loader, at::Tensor* const* inputs, int n_inputs, at::Tensor*** outputs, int* n_outputs,
                 char** err) {
  bool ok = guarded(err, [&] {
    std::vector<at::Tensor> in;
    in.reserve(static_cast<size_t>(n_inputs));
    for (int i = 0; i < n_inputs; ++i) {
      in.push_back(*inputs[i]);
    }
    std::vector<at::Tensor> out = static_cast<torch::inductor::AOTIModelPackageLoader*>(loader)->run(in);
    auto** arr = static_cast<at::Tensor**>(std::malloc(sizeof(at::Tensor*) * (out.size() + 1)));
    if (arr == nullptr) {
      throw std::bad_alloc();
    }
    for (size_t i = 0; i < out.size(); ++i) {
      arr[i] = new at::Tensor(std::move(out[i]));
    }
    *outputs = arr;
    *n_outputs = static_cast<int>(out.size());
  });
  return ok ? 0 : -1;
}

void dls_aoti_free_outputs(at::Tensor** outputs) { std::free(outputs); }

}  // extern "C"
