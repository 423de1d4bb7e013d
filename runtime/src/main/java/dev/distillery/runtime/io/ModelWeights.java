package dev.distillery.runtime.io;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * The weight files of a model folder, as Hugging Face keeps them: {@code model.safetensors}, or
 * the shards that {@code model.safetensors.index.json} maps each tensor to (what
 * {@code save_pretrained} writes past its shard size). Every file stays mapped until close.
 */
public final class ModelWeights implements AutoCloseable {

    public static final String SINGLE = "model.safetensors", INDEX = "model.safetensors.index.json";

    private final Map<String, SafetensorsFile> byTensor;
    private final List<SafetensorsFile> files;

    private ModelWeights(Map<String, SafetensorsFile> byTensor, List<SafetensorsFile> files) {
        this.byTensor = byTensor;
        this.files = files;
    }

    public static ModelWeights open(Path dir) throws IOException {
        Path single = dir.resolve(SINGLE), index = dir.resolve(INDEX);
        List<SafetensorsFile> files = new ArrayList<>();
        Map<String, SafetensorsFile> byTensor = new LinkedHashMap<>();
        try {
            if (Files.isRegularFile(single) || !Files.isRegularFile(index)) {
                SafetensorsFile st = SafetensorsFile.open(single);
                files.add(st);
                for (String name : st.entries().keySet()) byTensor.put(name, st);
                return new ModelWeights(byTensor, files);
            }
            JsonNode map = ModelFiles.readJson(index).path("weight_map");
            if (!map.isObject() || map.isEmpty()) throw new IOException(index + ": 'weight_map' must map tensor names to files");
            Map<String, SafetensorsFile> byFile = new LinkedHashMap<>();
            for (var it = map.fields(); it.hasNext(); ) {
                var e = it.next();
                String file = e.getValue().asText();
                if (file.isEmpty() || file.contains("/") || file.contains("\\")) {
                    throw new IOException(index + ": 'weight_map." + e.getKey() + "' must name a file in " + dir + ", got '" + file + "'");
                }
                SafetensorsFile st = byFile.get(file);
                if (st == null) {
                    if (!Files.isRegularFile(dir.resolve(file))) throw new IOException(index + ": lists " + file + ", which is missing");
                    st = SafetensorsFile.open(dir.resolve(file));
                    files.add(st);
                    byFile.put(file, st);
                }
                if (!st.contains(e.getKey())) throw new IOException(index + ": maps '" + e.getKey() + "' to " + file + ", which does not hold it");
                byTensor.put(e.getKey(), st);
            }
            return new ModelWeights(byTensor, files);
        } catch (IOException | RuntimeException e) {
            for (SafetensorsFile f : files) f.close();
            throw e;
        }
    }

    public boolean contains(String name) {
        return byTensor.containsKey(name);
    }

    /** The file that holds {@code name}; null when none does. */
    public SafetensorsFile fileOf(String name) {
        return byTensor.get(name);
    }

    /** What names the files' tensors: the one file, or the index. */
    public String describe(Path dir) {
        return files.size() == 1 ? files.get(0).path().toString() : dir.resolve(INDEX) + " (" + files.size() + " files)";
    }

    @Override
    public void close() {
        for (SafetensorsFile f : files) f.close();
    }
}
